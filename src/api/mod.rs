//! HTTP: /metrics, /healthz, /readyz, the git webhook, and the local admin API (unix socket).
