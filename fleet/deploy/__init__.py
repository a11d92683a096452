"""`ecufl deploy`: bundles, SSH push with an atomic switch, services under systemd or ecufl-supervise,
the fleet's CA and keys. One module per idea: inventory, bundle, ssh, remote, config, certs, cli."""
