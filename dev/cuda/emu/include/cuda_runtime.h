// cuda_runtime.h for the CPU emulation (dev/cuda/emu/cuda_emu.h): found first through -I dev/cuda/emu/include
#pragma once
#include "../cuda_emu.h"
