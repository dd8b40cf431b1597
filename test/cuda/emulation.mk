# The CUDA kernels compiled as plain C++ against test/cuda/emu/cuda_runtime.h (the CPU emulation of CUDA), for
# test/cuda/emulate.sh (target `check`: the GPU-vs-CPU check program) and test/cuda/emulated-addon.sh (target
# `addon`: the whole CUDA addon). Both link the same objects, compiled once each, in parallel under make -j, and
# rebuilt only when a source or a header it includes changed (-MMD).
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/../..)
OUT := $(ROOT)/build-cuda-emulation
OBJ := $(OUT)/obj
# -fPIC and hidden visibility serve both the executable and the shared addon.
FLAGS := -std=c++17 -O2 -g -fPIC -fvisibility=hidden -ffp-contract=off -pthread -DIMIAD_CUDA_EMULATION \
  -I$(ROOT)/test/cuda/emu -I$(ROOT)/native
NAPI_FLAGS := -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED -I$(ROOT)/bindings \
  -I$(NODE_INCLUDE) -I$(ADDON_API)

CU := $(sort $(wildcard $(ROOT)/native/*.cu))
CC := $(sort $(wildcard $(ROOT)/native/*.cc))
GLUE := $(sort $(wildcard $(ROOT)/bindings/cuda/*.cc))
KERNEL_OBJS := $(patsubst $(ROOT)/native/%.cu,$(OBJ)/cu_%.o,$(CU)) $(patsubst $(ROOT)/native/%.cc,$(OBJ)/cc_%.o,$(CC))
GLUE_OBJS := $(patsubst $(ROOT)/bindings/cuda/%.cc,$(OBJ)/glue_%.o,$(GLUE))

.PHONY: check addon
check: $(OUT)/imiad_cuda_check_emulated
addon: $(OUT)/imiad_cuda.node

$(OUT)/imiad_cuda_check_emulated: $(KERNEL_OBJS) $(OBJ)/check.o
	$(CXX) $(FLAGS) $^ -o $@
$(OUT)/imiad_cuda.node: $(KERNEL_OBJS) $(GLUE_OBJS)
	@test -n "$(NODE_INCLUDE)" -a -n "$(ADDON_API)" || { echo "addon: NODE_INCLUDE and ADDON_API must be set" >&2; exit 1; }
	$(CXX) $(FLAGS) -shared $^ -o $@

$(OBJ)/cu_%.o: $(ROOT)/native/%.cu | $(OBJ)
	$(CXX) $(FLAGS) -MMD -x c++ -c $< -o $@
$(OBJ)/cc_%.o: $(ROOT)/native/%.cc | $(OBJ)
	$(CXX) $(FLAGS) -MMD -c $< -o $@
$(OBJ)/check.o: $(ROOT)/test/cuda/check.cu | $(OBJ)
	$(CXX) $(FLAGS) -MMD -x c++ -c $< -o $@
$(OBJ)/glue_%.o: $(ROOT)/bindings/cuda/%.cc | $(OBJ)
	$(CXX) $(FLAGS) $(NAPI_FLAGS) -MMD -c $< -o $@
$(OBJ):
	mkdir -p $@

-include $(wildcard $(OBJ)/*.d)
