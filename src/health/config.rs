//! A container's healthcheck configuration, in Docker's shape (`Config.Healthcheck`): the
//! image's HEALTHCHECK merged with what `run` (or a Compose service) gives, zero meaning
//! "inherit, else the default", and the probe it resolves to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Categorized, Category};
use crate::image::manifest::Healthcheck as ImageHealthcheck;

/// Docker's defaults for fields left at zero.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
/// Docker's `MinimumDuration`: a duration that is set must be at least this.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The shell of `CMD-SHELL` tests when the image sets none.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Docker's `HealthConfig`; serialized as Docker does (durations in nanoseconds, fields left
/// out when zero).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `[]` inherit the image's, `["NONE"]` disabled, `["CMD", arg...]` or
    /// `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub interval: Duration,
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub timeout: Duration,
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub start_period: Duration,
    #[serde(default, with = "nanos", skip_serializing_if = "Duration::is_zero")]
    pub start_interval: Duration,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthConfigError {
    #[error("invalid healthcheck test {test:?}: {reason}")]
    Test { test: Vec<String>, reason: String },
    #[error("invalid healthcheck {field} {value}: it must be 0 (the default) or at least 1ms")]
    TooShort { field: &'static str, value: String },
}

impl Categorized for HealthConfigError {
    fn category(&self) -> Category {
        Category::Invalid
    }
}

/// What the shim runs: the resolved command and timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The process to exec in the container.
    pub args: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

impl HealthConfig {
    /// `--no-healthcheck`, `HEALTHCHECK NONE`, Compose's `disable: true`.
    pub fn disabled() -> HealthConfig {
        HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        }
    }

    /// The image config's HEALTHCHECK (negative values, which Docker never writes, count as
    /// unset).
    pub fn from_image(image: &ImageHealthcheck) -> HealthConfig {
        HealthConfig {
            test: image.test.clone(),
            interval: image.interval().unwrap_or_default(),
            timeout: image.timeout().unwrap_or_default(),
            start_period: image.start_period().unwrap_or_default(),
            start_interval: image.start_interval().unwrap_or_default(),
            retries: image.retries().unwrap_or(0),
        }
    }

    /// Docker's merge of the container's healthcheck over the image's: without one of its own
    /// the container takes the image's; otherwise each field left empty or zero is taken from
    /// the image.
    pub fn merge(user: Option<HealthConfig>, image: Option<HealthConfig>) -> Option<HealthConfig> {
        let Some(mut user) = user else {
            return image;
        };
        if let Some(image) = image {
            if user.test.is_empty() {
                user.test = image.test;
            }
            let inherit = |mine: &mut Duration, theirs: Duration| {
                if mine.is_zero() {
                    *mine = theirs;
                }
            };
            inherit(&mut user.interval, image.interval);
            inherit(&mut user.timeout, image.timeout);
            inherit(&mut user.start_period, image.start_period);
            inherit(&mut user.start_interval, image.start_interval);
            if user.retries == 0 {
                user.retries = image.retries;
            }
        }
        Some(user)
    }

    /// Whether a probe runs: a `CMD` or `CMD-SHELL` test (an empty test, after the merge,
    /// means none, as in Docker).
    pub fn is_enabled(&self) -> bool {
        matches!(
            self.test.first().map(String::as_str),
            Some("CMD" | "CMD-SHELL")
        )
    }

    /// Checks the test's form and the durations. Unlike Docker, which ignores an unknown
    /// test type with a warning, an unknown type is an error.
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        let bad = |reason: &str| HealthConfigError::Test {
            test: self.test.clone(),
            reason: reason.into(),
        };
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") if self.test.len() < 2 || self.test[1].is_empty() => {
                return Err(bad("CMD needs a program to run"))
            }
            Some("CMD-SHELL") if self.test.len() != 2 || self.test[1].trim().is_empty() => {
                return Err(bad("CMD-SHELL needs exactly one command string"))
            }
            Some("CMD" | "CMD-SHELL") => {}
            Some(_) => return Err(bad("the first element must be NONE, CMD or CMD-SHELL")),
        }
        for (field, d) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("start period", self.start_period),
            ("start interval", self.start_interval),
        ] {
            if !d.is_zero() && d < MIN_DURATION {
                return Err(HealthConfigError::TooShort {
                    field,
                    value: super::output::go_duration(d),
                });
            }
        }
        Ok(())
    }

    /// The probe with Docker's defaults filled in; `None` when no healthcheck runs. `shell`
    /// is the image's SHELL for `CMD-SHELL` tests (`/bin/sh -c` when empty).
    pub fn probe(&self, shell: &[String]) -> Option<Probe> {
        let args = match self.test.first().map(String::as_str) {
            Some("CMD") => self.test[1..].to_vec(),
            Some("CMD-SHELL") => {
                let mut args: Vec<String> = if shell.is_empty() {
                    DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
                } else {
                    shell.to_vec()
                };
                args.extend(self.test[1..].iter().cloned());
                args
            }
            _ => return None,
        };
        if args.is_empty() {
            return None;
        }
        let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
        Some(Probe {
            args,
            interval: or(self.interval, DEFAULT_INTERVAL),
            timeout: or(self.timeout, DEFAULT_TIMEOUT),
            start_period: or(self.start_period, DEFAULT_START_PERIOD),
            start_interval: or(self.start_interval, DEFAULT_START_INTERVAL),
            retries: if self.retries == 0 {
                DEFAULT_RETRIES
            } else {
                self.retries
            },
        })
    }
}

/// Durations as integer nanoseconds (Go's `time.Duration` in JSON).
mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Negative values (never written by Docker) count as unset.
        let n = i64::deserialize(d)?;
        Ok(Duration::from_nanos(n.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn shell(cmd: &str) -> Vec<String> {
        vec!["CMD-SHELL".into(), cmd.into()]
    }

    #[test]
    fn defaults_fill_zero_fields() {
        let c = HealthConfig {
            test: shell("test -f /tmp/ok"),
            ..HealthConfig::default()
        };
        let p = c.probe(&[]).unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "test -f /tmp/ok"]);
        assert_eq!(
            (
                p.interval,
                p.timeout,
                p.start_period,
                p.start_interval,
                p.retries
            ),
            (secs(30), secs(30), Duration::ZERO, secs(5), 3)
        );
        let exec = HealthConfig {
            test: vec!["CMD".into(), "cat".into(), "/tmp/ok".into()],
            interval: secs(2),
            retries: 7,
            ..HealthConfig::default()
        };
        let p = exec.probe(&["/bin/bash".into(), "-c".into()]).unwrap();
        assert_eq!(p.args, ["cat", "/tmp/ok"], "CMD ignores the shell");
        assert_eq!((p.interval, p.retries), (secs(2), 7));
        let custom_shell = c.probe(&["/bin/ash".into(), "-ec".into()]).unwrap();
        assert_eq!(custom_shell.args, ["/bin/ash", "-ec", "test -f /tmp/ok"]);
    }

    #[test]
    fn none_and_empty_tests_run_nothing() {
        assert!(HealthConfig::disabled().probe(&[]).is_none());
        assert!(!HealthConfig::disabled().is_enabled());
        assert!(HealthConfig::default().probe(&[]).is_none());
        assert!(!HealthConfig::default().is_enabled());
    }

    #[test]
    fn merge_follows_docker() {
        let image = HealthConfig {
            test: shell("image-check"),
            interval: secs(10),
            timeout: secs(3),
            retries: 5,
            ..HealthConfig::default()
        };
        // Nothing given: the image's.
        assert_eq!(
            HealthConfig::merge(None, Some(image.clone())),
            Some(image.clone())
        );
        assert_eq!(HealthConfig::merge(None, None), None);
        // Only a timing given: the image's test and its other fields stay.
        let user = HealthConfig {
            interval: secs(1),
            ..HealthConfig::default()
        };
        let merged = HealthConfig::merge(Some(user), Some(image.clone())).unwrap();
        assert_eq!(merged.test, image.test);
        assert_eq!(
            (merged.interval, merged.timeout, merged.retries),
            (secs(1), secs(3), 5)
        );
        // A test of our own replaces the image's test only.
        let user = HealthConfig {
            test: shell("mine"),
            ..HealthConfig::default()
        };
        let merged = HealthConfig::merge(Some(user), Some(image.clone())).unwrap();
        assert_eq!(merged.test, shell("mine"));
        assert_eq!(merged.interval, secs(10));
        // --no-healthcheck wins over the image.
        let merged = HealthConfig::merge(Some(HealthConfig::disabled()), Some(image)).unwrap();
        assert!(!merged.is_enabled());
        // Timings without any test anywhere: nothing runs.
        let user = HealthConfig {
            interval: secs(1),
            ..HealthConfig::default()
        };
        assert!(!HealthConfig::merge(Some(user), None).unwrap().is_enabled());
    }

    #[test]
    fn from_the_image_config() {
        let image: ImageHealthcheck = serde_json::from_str(
            r#"{"Test":["CMD-SHELL","curl -f localhost"],"Interval":5000000000,
                "Timeout":-1,"StartPeriod":0,"Retries":2}"#,
        )
        .unwrap();
        let c = HealthConfig::from_image(&image);
        assert_eq!(c.test, shell("curl -f localhost"));
        assert_eq!(
            (c.interval, c.timeout, c.retries),
            (secs(5), Duration::ZERO, 2)
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = |test: Vec<&str>| HealthConfig {
            test: test.into_iter().map(String::from).collect(),
            ..HealthConfig::default()
        };
        assert!(ok(vec!["CMD", "true"]).validate().is_ok());
        assert!(ok(vec!["CMD-SHELL", "exit 0"]).validate().is_ok());
        assert!(ok(vec!["NONE"]).validate().is_ok());
        assert!(ok(vec![]).validate().is_ok());
        for bad in [
            vec!["CMD"],
            vec!["CMD", ""],
            vec!["CMD-SHELL"],
            vec!["CMD-SHELL", "a", "b"],
            vec!["CMD-SHELL", "  "],
            vec!["SHELL", "x"],
        ] {
            let e = ok(bad.clone()).validate().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let short = HealthConfig {
            test: shell("x"),
            timeout: Duration::from_micros(10),
            ..HealthConfig::default()
        };
        let e = short.validate().unwrap_err().to_string();
        assert!(e.contains("timeout 10µs"), "{e}");
    }

    #[test]
    fn serializes_like_docker() {
        let c = HealthConfig {
            test: shell("x"),
            interval: Duration::from_millis(1500),
            retries: 2,
            ..HealthConfig::default()
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Test": ["CMD-SHELL", "x"], "Interval": 1_500_000_000u64, "Retries": 2})
        );
        assert_eq!(serde_json::from_value::<HealthConfig>(json).unwrap(), c);
        let negative: HealthConfig = serde_json::from_str(r#"{"Timeout":-5}"#).unwrap();
        assert_eq!(negative.timeout, Duration::ZERO);
    }
}
