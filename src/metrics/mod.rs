//! Prometheus metric families of the agent, its process and its containers.
