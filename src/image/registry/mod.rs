//! OCI distribution client: auth, credentials, TLS, mirrors, retries, resumable blob downloads.
