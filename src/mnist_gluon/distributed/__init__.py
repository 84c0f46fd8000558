"""mnist-launch: a whole parameter-server cluster of mnist-train processes, started on this
machine or over ssh, and watched to the end. A worker's own side of it is training.cluster."""
