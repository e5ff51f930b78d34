# Builds the CPU trainer, its tests, the data tools and (where nvcc exists) the CUDA trainer.
#   make train      build, prepare Tiny Shakespeare if missing, train the default model (~10 min, 2 cores)
#   make test       build and run the test suite
#   NO_OMP=1        build without OpenMP
CC ?= cc
CFLAGS ?= -O3 -march=native
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-unused-function
LDLIBS = -lm

# OpenMP: gcc/clang with -fopenmp where it links; macOS clang needs Homebrew's libomp
ifeq ($(NO_OMP),1)
  $(info OpenMP disabled (NO_OMP=1))
else ifeq ($(shell echo 'int main(){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo ok),ok)
  CFLAGS += -fopenmp
  $(info OpenMP found: building with -fopenmp)
else ifneq ($(wildcard /opt/homebrew/opt/libomp/lib/libomp.dylib),)
  CFLAGS += -Xclang -fopenmp -I/opt/homebrew/opt/libomp/include
  LDLIBS += -L/opt/homebrew/opt/libomp/lib -lomp
  $(info OpenMP found: Homebrew libomp)
else
  $(info OpenMP not found: building single-threaded)
endif

NVCC := $(shell command -v nvcc 2>/dev/null)

DATA = data/tinyshakespeare/tiny_shakespeare_train.bin
TOKENIZER = data/tokenizer_bytes.bin

.PHONY: all train test data clean
all: train_gla test_gla data/prepare

train_gla: train_gla.c model.h dev/matmul.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

test_gla: test_gla.c train_gla.c model.h dev/matmul.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

data/prepare: data/prepare.c model.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

$(DATA) $(TOKENIZER): data/prepare
	./data/prepare

data: $(DATA)

# the main job: about 1M parameters, GLA 3:1 attention, for at most 10 minutes on 2 cores
train: train_gla $(DATA)
	./train_gla --max-time 560 --out out/default

test: test_gla
	./test_gla

clean:
	rm -f train_gla test_gla data/prepare
