// Every layer kernel template: the one source NVRTC compiles; name
// expressions pick the instantiations.
#pragma once

#include "moejit/layer/aggregation.cuh"
#include "moejit/layer/permutation.cuh"
#include "moejit/layer/rounding.cuh"
#include "moejit/layer/router.cuh"
