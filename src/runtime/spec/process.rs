//! The process: Docker's rules for the command line, the environment and the working dir.

use crate::image::manifest::ContainerConfig;

use super::mounts::clean_container_path;
use super::options::ContainerOptions;
use super::SpecError;

/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `entrypoint ++ cmd`: a given command replaces the image's Cmd; a given entrypoint replaces
/// the image's Entrypoint and drops its Cmd (`Some(vec![])` resets both).
pub fn process_args(
    image: &ContainerConfig,
    opts: &ContainerOptions,
) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(ep) => (ep.clone(), opts.command.clone()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            if opts.command.is_empty() {
                image.cmd.clone().unwrap_or_default()
            } else {
                opts.command.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    match args.first() {
        None => {
            return Err(SpecError::NoCommand {
                image: opts.identity.image.clone(),
            })
        }
        Some(first) if first.is_empty() => {
            return Err(SpecError::invalid(
                "command",
                format!("{args:?}"),
                "the executable name is empty",
            ))
        }
        Some(_) => {}
    }
    if let Some(bad) = args.iter().find(|a| a.contains('\0')) {
        return Err(SpecError::invalid(
            "command",
            bad.clone(),
            "contains a NUL byte",
        ));
    }
    Ok(args)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn check_env(field: &'static str, entry: &str) -> Result<(), SpecError> {
    if env_key(entry).is_empty() {
        return Err(SpecError::invalid(
            field,
            entry,
            "the variable name is empty",
        ));
    }
    if entry.contains('\0') {
        return Err(SpecError::invalid(field, entry, "contains a NUL byte"));
    }
    Ok(())
}

/// Docker's `ReplaceOrAppendEnvValues`: an override `K=V` replaces `K` where it stands or is
/// appended; a bare `K` removes `K`.
pub fn replace_or_append_env(mut defaults: Vec<String>, overrides: &[String]) -> Vec<String> {
    let mut removed = vec![false; defaults.len()];
    for value in overrides {
        let key = env_key(value);
        let existing = defaults.iter().position(|d| env_key(d) == key);
        match (value.contains('='), existing) {
            (false, Some(i)) => removed[i] = true,
            (false, None) => {}
            (true, Some(i)) => {
                defaults[i] = value.clone();
                removed[i] = false;
            }
            (true, None) => {
                defaults.push(value.clone());
                removed.push(false);
            }
        }
    }
    defaults
        .into_iter()
        .zip(removed)
        .filter_map(|(v, gone)| (!gone).then_some(v))
        .collect()
}

/// The container's environment, in Docker's order: PATH (the image's, or Docker's default),
/// HOSTNAME, TERM with a tty, then the user's variables (env files, then `-e`), then the
/// image's variables the user did not set, and HOME from the user's passwd entry when nobody
/// set it (runc appends it last).
pub fn container_env(
    image: &ContainerConfig,
    opts: &ContainerOptions,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    for e in &image.env {
        check_env("image env", e)?;
    }
    for e in &opts.env_files {
        check_env("env_file", e)?;
    }
    for e in &opts.env {
        check_env("env", e)?;
    }
    let user: Vec<String> = opts.env_files.iter().chain(&opts.env).cloned().collect();
    let mut config_env = user.clone();
    for e in &image.env {
        if !user.iter().any(|u| env_key(u) == env_key(e)) {
            config_env.push(e.clone());
        }
    }
    let mut base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if opts.tty {
        base.push("TERM=xterm".to_string());
    }
    let mut env = replace_or_append_env(base, &config_env);
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    Ok(env)
}

/// The working dir: `-w`, else the image's, else `/`; it must be absolute.
pub fn working_dir(image: &ContainerConfig, opts: &ContainerOptions) -> Result<String, SpecError> {
    let dir = opts
        .working_dir
        .as_deref()
        .or(image.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    clean_container_path("working_dir", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn image(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        ContainerConfig {
            entrypoint: ep.map(s),
            cmd: cmd.map(s),
            ..Default::default()
        }
    }

    fn opts(ep: Option<&[&str]>, cmd: &[&str]) -> ContainerOptions {
        let mut o = ContainerOptions {
            entrypoint: ep.map(s),
            command: s(cmd),
            ..Default::default()
        };
        o.identity.image = "example/app:1".into();
        o
    }

    #[test]
    fn image_defaults() {
        let img = image(Some(&["/entry.sh"]), Some(&["serve", "--port", "80"]));
        assert_eq!(
            process_args(&img, &opts(None, &[])).unwrap(),
            ["/entry.sh", "serve", "--port", "80"]
        );
    }

    #[test]
    fn command_replaces_cmd_only() {
        let img = image(Some(&["/entry.sh"]), Some(&["serve"]));
        assert_eq!(
            process_args(&img, &opts(None, &["migrate"])).unwrap(),
            ["/entry.sh", "migrate"]
        );
        let img = image(None, Some(&["sh"]));
        assert_eq!(
            process_args(&img, &opts(None, &["true"])).unwrap(),
            ["true"]
        );
    }

    #[test]
    fn entrypoint_replaces_entrypoint_and_resets_cmd() {
        let img = image(Some(&["/entry.sh"]), Some(&["serve"]));
        assert_eq!(
            process_args(&img, &opts(Some(&["/bin/sh", "-c"]), &[])).unwrap(),
            ["/bin/sh", "-c"]
        );
        assert_eq!(
            process_args(&img, &opts(Some(&["/bin/sh"]), &["-c", "echo hi"])).unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        // Reset: only the given command remains.
        assert_eq!(
            process_args(&img, &opts(Some(&[]), &["/bin/true"])).unwrap(),
            ["/bin/true"]
        );
    }

    #[test]
    fn nothing_to_run_names_the_image() {
        let err = process_args(&image(None, None), &opts(None, &[])).unwrap_err();
        assert!(matches!(&err, SpecError::NoCommand { image } if image == "example/app:1"));
        assert!(err.to_string().contains("example/app:1"));
        let img = image(Some(&["/entry.sh"]), Some(&["serve"]));
        assert!(matches!(
            process_args(&img, &opts(Some(&[]), &[])).unwrap_err(),
            SpecError::NoCommand { .. }
        ));
        assert!(process_args(&image(None, Some(&[""])), &opts(None, &[])).is_err());
        assert!(process_args(&image(None, Some(&["a\0b"])), &opts(None, &[])).is_err());
    }

    #[test]
    fn replace_or_append_like_docker() {
        let out = replace_or_append_env(
            s(&["PATH=/bin", "A=1", "B=2"]),
            &s(&["B=3", "C=4", "A", "A=5", "Z"]),
        );
        assert_eq!(out, ["PATH=/bin", "A=5", "B=3", "C=4"]);
        let out = replace_or_append_env(s(&["A=1"]), &s(&["A"]));
        assert!(out.is_empty());
    }

    fn env_of(image_env: &[&str], files: &[&str], env: &[&str], tty: bool) -> Vec<String> {
        let img = ContainerConfig {
            env: s(image_env),
            ..Default::default()
        };
        let o = ContainerOptions {
            env_files: s(files),
            env: s(env),
            tty,
            ..Default::default()
        };
        container_env(&img, &o, "c0ffee", "/root").unwrap()
    }

    #[test]
    fn env_order_and_precedence_like_docker() {
        assert_eq!(
            env_of(
                &["PATH=/opt/bin:/bin", "LANG=C", "MODE=image"],
                &[],
                &["FOO=1"],
                false
            ),
            [
                "PATH=/opt/bin:/bin",
                "HOSTNAME=c0ffee",
                "FOO=1",
                "LANG=C",
                "MODE=image",
                "HOME=/root"
            ]
        );
        // -e wins over env files, both over the image; a bare name unsets.
        assert_eq!(
            env_of(
                &["MODE=image", "LANG=C"],
                &["MODE=file", "X=file"],
                &["MODE=flag", "LANG"],
                false
            ),
            [
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=c0ffee",
                "MODE=flag",
                "X=file",
                "HOME=/root"
            ]
        );
    }

    #[test]
    fn env_defaults_and_overrides() {
        assert_eq!(
            env_of(&[], &[], &[], true),
            [
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=c0ffee",
                "TERM=xterm",
                "HOME=/root"
            ]
        );
        assert_eq!(
            env_of(&["HOME=/srv"], &[], &["HOSTNAME=custom", "TERM=dumb"], true),
            [
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=custom",
                "TERM=dumb",
                "HOME=/srv"
            ]
        );
        // A value may contain '='.
        assert!(env_of(&[], &[], &["Q=a=b"], false).contains(&"Q=a=b".to_string()));
    }

    #[test]
    fn bad_env_is_refused_by_field() {
        let img = ContainerConfig::default();
        for (files, env, field) in [
            (s(&["=x"]), vec![], "env_file"),
            (vec![], s(&["A=\0"]), "env"),
            (vec![], s(&[""]), "env"),
        ] {
            let o = ContainerOptions {
                env_files: files,
                env,
                ..Default::default()
            };
            let err = container_env(&img, &o, "h", "/").unwrap_err();
            assert!(matches!(err, SpecError::Invalid { field: f, .. } if f == field));
        }
    }

    #[test]
    fn working_dir_rules() {
        let img = ContainerConfig {
            working_dir: Some("/app".into()),
            ..Default::default()
        };
        let mut o = ContainerOptions::default();
        assert_eq!(working_dir(&img, &o).unwrap(), "/app");
        assert_eq!(working_dir(&ContainerConfig::default(), &o).unwrap(), "/");
        o.working_dir = Some("/srv/./data/".into());
        assert_eq!(working_dir(&img, &o).unwrap(), "/srv/data");
        o.working_dir = Some("data".into());
        let err = working_dir(&img, &o).unwrap_err();
        assert!(matches!(
            err,
            SpecError::Invalid {
                field: "working_dir",
                ..
            }
        ));
        assert!(err.to_string().contains("absolute"));
    }
}
