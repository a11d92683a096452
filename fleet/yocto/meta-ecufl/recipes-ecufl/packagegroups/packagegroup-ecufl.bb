SUMMARY = "ecufl on an ECU: the board agent and the native trainers"
SUMMARY:${PN}-python = "ecufl with the Python client (board mode supernode)"
DESCRIPTION = "packagegroup-ecufl installs what board mode agent needs (no Python); \
               packagegroup-ecufl-python adds the Python client for board mode supernode."
BUGTRACKER = "https://github.com/ecufl/ecufl/issues"
SECTION = "ml"

inherit packagegroup

PACKAGES = "${PN} ${PN}-python"

RDEPENDS:${PN} = "ecufl-agent ecufl-kernels"
RDEPENDS:${PN}-python = "${PN} python3-ecufl"
