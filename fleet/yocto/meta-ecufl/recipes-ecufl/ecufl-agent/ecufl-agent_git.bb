SUMMARY = "ecufl board agent: trains HDRNN for a remote ClientApp over mutual TLS"
DESCRIPTION = "A small native agent for ECU images without Python. It accepts a round's \
               weights and hyper-parameters (protobuf, proto/agent.proto) over TLS with \
               client certificates, trains on the data stored on the board with the C \
               kernel and returns the weights and its round report. Training data never \
               leaves the board."

require recipes-ecufl/ecufl-source.inc

DEPENDS += "openssl protobuf-c protobuf-c-native zlib"

SRC_URI += "file://ecufl-agent.service"

inherit cmake systemd

OECMAKE_SOURCEPATH = "${S}/fleet/agent"
# On the image the agent links the shared OpenSSL/protobuf-c/zlib of the image (the static build
# is for copying one file onto a board by hand). The C kernel sources are compiled in.
EXTRA_OECMAKE = "-DECUFL_AGENT_STATIC=OFF"

SYSTEMD_SERVICE:${PN} = "ecufl-agent.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${WORKDIR}/ecufl-agent.service ${D}${systemd_system_unitdir}/ecufl-agent.service
    install -d ${D}${sysconfdir}/ecufl
}

FILES:${PN} += "${systemd_system_unitdir}/ecufl-agent.service ${sysconfdir}/ecufl"

# ecufl-agent-native: the same agent on the build host (how the deploy tests run it).
BBCLASSEXTEND = "native"
