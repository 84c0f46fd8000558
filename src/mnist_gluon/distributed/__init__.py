"""Training on MXNet's parameter-server kvstore: the cluster's wiring (cluster), the update that
runs on the servers (updater), and the launcher that starts and watches the processes
(launch)."""
