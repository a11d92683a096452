SUMMARY = "ecufl native HDRNN kernels (C and C++/Eigen) and standalone trainers"
DESCRIPTION = "The C ABI kernel library of ecufl (kernels/common/ecufl_kernel.h) and the \
               trainers ecufl-train-c and ecufl-train-eigen, which train HDRNN on MNIST on \
               the board without Python and print accuracy, time and peak RSS."

require recipes-ecufl/ecufl-source.inc

# Eigen is header-only: a build dependency, nothing at run time.
DEPENDS += "libeigen"

inherit cmake

# Build only the native part: no Python binding, no generated Python protobuf code.
OECMAKE_SOURCEPATH = "${S}/kernels"
EXTRA_OECMAKE = "-DECUFL_BUILD_PYTHON=OFF -DECUFL_BUILD_TRAINERS=ON"

# kernels/CMakeLists.txt installs the trainers (ecufl-train-c, ecufl-train-eigen) into bindir; the
# kernel libraries are linked into them statically (the shared ones are for the Python package).

BBCLASSEXTEND = "native nativesdk"
