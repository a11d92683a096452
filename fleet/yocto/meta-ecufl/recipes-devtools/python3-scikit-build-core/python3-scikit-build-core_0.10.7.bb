SUMMARY = "Build backend for CMake based Python projects (PEP 517)"
DESCRIPTION = "scikit-build-core, the build backend of python3-ecufl. oe-core gained its \
               own scikit-build-core recipe and class after scarthgap; on scarthgap this \
               layer carries it."
HOMEPAGE = "https://github.com/scikit-build/scikit-build-core"
BUGTRACKER = "https://github.com/scikit-build/scikit-build-core/issues"
SECTION = "devel/python"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b4e748e5f102e31c9390dcd6fa66f09"

CVE_PRODUCT = "scikit-build-core"

DEPENDS += "python3-hatch-vcs-native"

SRC_URI[sha256sum] = "04cbb59fe795202a7eeede1849112ee9dcbf3469feebd9b8b36aa541336ac4f8"

PYPI_PACKAGE = "scikit_build_core"

inherit pypi python_hatchling

RDEPENDS:${PN} += "python3-packaging python3-pathspec"

BBCLASSEXTEND = "native"
