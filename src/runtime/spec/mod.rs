//! The OCI runtime spec of a container, built from its image config and options with Docker's
//! semantics. Pure: it reads only the image's /etc/passwd and /etc/group (through
//! [`RootfsView`]) and the host facts it is given ([`HostLimits`]).
//!
//! What the spec says and what is left to the runtime in the shim:
//! - process: args (entrypoint ++ cmd, behind the init binary with `--init`), env, cwd, user
//!   with supplementary groups, capabilities, no_new_privileges, rlimits, terminal;
//! - root: `rootfs` relative to the bundle (the shim mounts the overlay there), read-only on
//!   request;
//! - mounts, masked and read-only paths, device nodes and the device cgroup: see [`mounts`];
//!   the /dev symlinks, /dev/console and creating mount points and the working dir are the
//!   runtime's job;
//! - linux: namespaces, sysctls, cgroup resources, seccomp, `cgroupsPath`
//!   `/dockmaster/<container id>`;
//! - annotations: dockmaster's identity (`io.dockmaster.*`).

pub mod capabilities;
mod error;
pub mod linux;
pub mod mounts;
pub mod options;
pub mod process;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod user;

#[cfg(test)]
mod tests;

use oci_spec::runtime::{
    LinuxBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::image::manifest::ImageConfig;

pub use error::SpecError;
pub use options::{
    BindMount, ContainerOptions, Identity, InitProcess, NetworkMode, SecurityOpt, TmpfsMount,
};
pub use rlimits::{HostLimits, RlimitKind, Ulimit};
pub use rootfs::{DirRootfs, OverlayRootfs, RootfsView};
pub use seccomp::SeccompArch;

/// The OCI runtime spec version written.
pub const OCI_VERSION: &str = "1.0.2";
/// The bundle-relative path of the root filesystem.
pub const ROOTFS_DIR: &str = "rootfs";

/// Builds the spec for the native architecture; see [`build_spec_for`].
pub fn build_spec(
    image: &ImageConfig,
    opts: &ContainerOptions,
    rootfs: &dyn RootfsView,
    host: &HostLimits,
) -> Result<Spec, SpecError> {
    build_spec_for(SeccompArch::native(), image, opts, rootfs, host)
}

/// Builds the spec of a container: checks every option, resolves the user against the image's
/// files, and renders the seccomp profile for `arch`.
pub fn build_spec_for(
    arch: SeccompArch,
    image: &ImageConfig,
    opts: &ContainerOptions,
    rootfs: &dyn RootfsView,
    host: &HostLimits,
) -> Result<Spec, SpecError> {
    let config = &image.config;
    let id = &opts.identity;
    linux::check_container_id(&id.container_id)?;
    let hostname = linux::hostname(opts)?;

    let user_spec = opts
        .user
        .as_deref()
        .or(config.user.as_deref())
        .unwrap_or("");
    let user = user::resolve_user(user_spec, &opts.group_add, rootfs, &id.image)?;

    let mut args = process::process_args(config, opts)?;
    if let Some(init) = &opts.init {
        let path = mounts::clean_container_path("init", &init.container_path)?;
        args = std::iter::once(path)
            .chain(init.args.iter().cloned())
            .chain(args)
            .collect();
    }
    let env = process::container_env(config, opts, &hostname, &user.home)?;
    let cwd = process::working_dir(config, opts)?;

    let caps = capabilities::restrict_to_host(
        capabilities::resolve_capabilities(&opts.cap_add, &opts.cap_drop, opts.privileged)?,
        &opts.cap_add,
        host.capabilities,
    )?;
    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for opt in &opts.security_opts {
        match opt {
            SecurityOpt::SeccompUnconfined => seccomp_unconfined = true,
            SecurityOpt::NoNewPrivileges(v) => no_new_privileges = *v,
        }
    }
    let rlimits = rlimits::build_rlimits(&opts.ulimits, host)?;

    // Every field is set explicitly: the builders fall back to oci-spec's own defaults (a
    // 1024 nofile rlimit, a few capabilities, TERM...), which are not Docker's.
    let mut process = ProcessBuilder::default()
        .terminal(opts.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities::linux_capabilities(&caps)?)
        .rlimits(rlimits);
    if no_new_privileges {
        process = process.no_new_privileges(true);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(linux::namespaces(&opts.network)?)
        .resources(linux::resources(opts, host)?)
        .devices(mounts::default_devices()?)
        .cgroups_path(format!("/dockmaster/{}", id.container_id))
        .masked_paths(Vec::<String>::new())
        .readonly_paths(Vec::<String>::new());
    let sysctls = linux::sysctls(&opts.sysctls, &opts.network)?;
    if !sysctls.is_empty() {
        linux = linux.sysctl(sysctls);
    }
    if !opts.privileged {
        linux = linux
            .masked_paths(mounts::MASKED_PATHS.map(String::from).to_vec())
            .readonly_paths(mounts::READONLY_PATHS.map(String::from).to_vec());
        if !seccomp_unconfined {
            linux = linux.seccomp(seccomp::default_profile(arch, &caps)?);
        }
    }

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(ROOTFS_DIR)
                .readonly(opts.read_only)
                .build()?,
        )
        .hostname(hostname)
        .mounts(mounts::build_mounts(opts)?)
        .process({
            let mut process = process.build()?;
            // Absent means false (oci-spec's builder defaults to true). An explicit `false` is
            // not written: libcontainer treats any present value as "on" when it orders
            // seccomp after dropping capabilities, and loading the filter then fails
            // without CAP_SYS_ADMIN.
            if !no_new_privileges {
                process.set_no_new_privileges(None);
            }
            process
        })
        .linux(linux.build()?)
        .annotations(linux::annotations(id))
        .build()?)
}
