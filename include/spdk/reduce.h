/* For programs written for SPDK's libreduce: #include "spdk/reduce.h". */
#ifndef SPDK_REDUCE_H_
#define SPDK_REDUCE_H_
#include "../reduce.h"
#endif /* SPDK_REDUCE_H_ */
