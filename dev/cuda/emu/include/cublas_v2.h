// cublas_v2.h for the CPU emulation (dev/cuda/emu/cublas_emu.h): found first through -I dev/cuda/emu/include
#pragma once
#include "../cuda_emu.h"
#include "../cublas_emu.h"
