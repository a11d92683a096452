SUMMARY = "ecufl Python client: a Flower SuperNode with the ecufl ClientApp"
DESCRIPTION = "The ecufl package for ECU images that carry Python (board mode supernode). \
               ecufl builds with scikit-build-core (CMake compiles the native kernels into \
               the wheel), so the recipe uses python_pep517, whose python3 -m build reads \
               the backend from pyproject.toml, not python_setuptools_build_meta. Flower \
               (flwr) has no recipe in any public layer: add one or install its wheel."

require recipes-ecufl/ecufl-source.inc

# scikit-build-core is the PEP 517 backend (pyproject.toml [build-system]); grpcio-tools
# generates the round report's Python code at build time. CMake picks up the cross CC/CXX
# (with --sysroot and the tune flags) that BitBake exports.
DEPENDS += "\
    cmake-native \
    libeigen \
    ninja-native \
    python3-grpcio-tools-native \
    python3-scikit-build-core-native \
"

SRC_URI += "file://ecufl-supernode.service"

inherit python_pep517 python3native python3targetconfig systemd

SYSTEMD_SERVICE:${PN} = "ecufl-supernode.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${WORKDIR}/ecufl-supernode.service ${D}${systemd_system_unitdir}/ecufl-supernode.service
}

FILES:${PN} += "${systemd_system_unitdir}/ecufl-supernode.service"

# Run-time needs of the ClientApp on the board (tests/test_packaging.py derives them from the
# imports of ecufl.client.client_app and the kernels, and checks this list). Mind the Cortex-A9: python3-grpcio is built
# from source for the image's tune (cortexa9thf-neon); PyPI's armv7l grpcio wheel uses udiv,
# which the A9 does not have (SIGILL at import).
RDEPENDS:${PN} += "\
    python3-cffi \
    python3-click \
    python3-cryptography \
    python3-grpcio \
    python3-numpy \
    python3-protobuf \
    python3-pydantic \
    python3-rich \
    python3-threadpoolctl \
"

BBCLASSEXTEND = "native nativesdk"
