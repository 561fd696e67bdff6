//! Compose manifests: parse (YAML), interpolate (`${VAR…}`, `.env`), merge, normalize and
//! validate a project into the typed model the planner works from. Pure: no I/O beyond reading
//! the project's own files through a seam, no tokio, no unsafe.
