# CMake toolchain for the NXP i.MX6 board: ARMv7-A Cortex-A9, hard float, NEON, 32-bit Linux.
# Debian's cross compiler (gcc-arm-linux-gnueabihf, g++-arm-linux-gnueabihf); binaries are linked
# statically so they run on the board's Yocto image and under `qemu-arm -cpu cortex-a9` without a
# sysroot. A Yocto eSDK brings its own toolchain file (CMAKE_TOOLCHAIN_FILE after sourcing its
# environment-setup-* script); `make arm` uses that one instead of this.
#   cmake -S kernels -B build/arm -DCMAKE_TOOLCHAIN_FILE=kernels/cmake/armv7-cortex-a9.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)

set(ECUFL_ARM_PREFIX "arm-linux-gnueabihf-" CACHE STRING "prefix of the cross compiler's programs")
set(CMAKE_C_COMPILER ${ECUFL_ARM_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${ECUFL_ARM_PREFIX}g++)

# The A9 has VFPv3 + NEON but no fused multiply-add (neon-vfpv4 would emit vfma: SIGILL on the board).
set(CMAKE_C_FLAGS_INIT "-mcpu=cortex-a9 -mfpu=neon -mfloat-abi=hard")
set(CMAKE_CXX_FLAGS_INIT "-mcpu=cortex-a9 -mfpu=neon -mfloat-abi=hard")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# Libraries only from the cross toolchain; header-only packages (Eigen's CMake config) from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# try_run and tests run through the emulator, strict about the A9's instruction set.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -cpu cortex-a9)
