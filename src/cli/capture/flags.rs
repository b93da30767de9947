//! `vkdirty capture`'s setting flags, made from the settings table: `--<name>` for every setting
//! the table marks, and `--set NAME=VALUE` for any. Values are checked as the layer reads them,
//! so a typo fails here with the accepted values rather than as a warning in the application.

use clap::{Arg, ArgAction, ArgMatches, Command};

use vkdirty::config::{self, SettingInfo, SettingType, Settings, SETTINGS};

/// The settings given on the command line, as `(NAME, value)` in the order they apply (later
/// wins): `--set` first, then the named flags.
#[derive(Clone, Debug, Default)]
pub struct SettingFlags {
    pub values: Vec<(&'static str, String)>,
}

impl SettingFlags {
    /// The value given for `name`, if any (the one that applies).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

fn flagged() -> impl Iterator<Item = &'static SettingInfo> {
    SETTINGS.iter().filter(|i| i.flag)
}

/// clap wants `'static` names; the table's are made once per run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn help(info: &SettingInfo) -> String {
    let doc = info.doc.replace('`', "");
    let default = match (info.default_doc, info.default) {
        (Some(d), _) => d.replace('`', ""),
        (None, "") => "unset".into(),
        (None, d) => d.into(),
    };
    format!("{doc} [accepted: {}] [default: {default}] [VKDIRTY_{}]", info.accepted(), info.name)
}

/// `NAME=VALUE` with a known name (any case, `-` or `_`) and a good value.
fn parse_set(s: &str) -> Result<(&'static str, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let upper = name.trim().to_ascii_uppercase().replace('-', "_");
    let upper = upper.strip_prefix("VKDIRTY_").unwrap_or(&upper).to_string();
    Settings::check(&upper, value)?;
    let info = config::setting(&upper).expect("checked above");
    Ok((info.name, value.trim().to_string()))
}

impl clap::Args for SettingFlags {
    fn augment_args(mut cmd: Command) -> Command {
        for info in flagged() {
            let name = info.name;
            let mut arg = Arg::new(name)
                .long(leak(info.flag_name()))
                .help(info.doc.replace('`', "").split(". ").next().unwrap_or("").trim_end_matches('.').to_string())
                .long_help(help(info))
                .help_heading("Settings (each also VKDIRTY_<NAME>; see README)")
                .action(ArgAction::Set)
                .value_parser(move |v: &str| Settings::check(name, v).map(|()| v.trim().to_string()));
            arg = match info.ty {
                // `--flush-every-submit` alone turns it on; `--flush-every-submit=0` off.
                SettingType::Bool => {
                    arg.num_args(0..=1).require_equals(true).default_missing_value("1").value_name("BOOL")
                }
                SettingType::Enum(_) => arg.value_name("VALUE"),
                SettingType::Ranges => arg.value_name("RANGES"),
                SettingType::Uint { .. } => arg.value_name("N"),
                SettingType::SaveFile { .. } | SettingType::LoadFile => arg.value_name("FILE"),
            };
            cmd = cmd.arg(arg);
        }
        cmd.arg(
            Arg::new("set")
                .long("set")
                .value_name("NAME=VALUE")
                .action(ArgAction::Append)
                .help_heading("Settings (each also VKDIRTY_<NAME>; see README)")
                .help("Any setting by name (TRACE_FILE, BACKEND, ...), as VKDIRTY_<NAME> would set it")
                .value_parser(parse_set),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for SettingFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut f = SettingFlags::default();
        f.update_from_arg_matches(m)?;
        Ok(f)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(sets) = m.get_many::<(&'static str, String)>("set") {
            self.values.extend(sets.cloned());
        }
        for info in flagged() {
            if let Some(v) = m.get_one::<String>(info.name) {
                self.values.push((info.name, v.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(args: &[&str]) -> Result<SettingFlags, clap::Error> {
        let cmd = SettingFlags::augment_args(Command::new("capture").no_binary_name(true));
        let m = cmd.try_get_matches_from(args)?;
        SettingFlags::from_arg_matches(&m)
    }

    #[test]
    fn every_flagged_setting_is_a_flag() {
        let cmd = SettingFlags::augment_args(Command::new("capture"));
        for info in SETTINGS {
            let has = cmd.get_arguments().any(|a| a.get_long() == Some(info.flag_name().as_str()));
            assert_eq!(has, info.flag, "--{}", info.flag_name());
        }
        for f in [
            "frames",
            "submits",
            "compression",
            "flush-every-submit",
            "log-level",
            "log-file",
            "trigger-file",
            "trigger-signal",
            "trigger-frames",
        ] {
            assert!(cmd.get_arguments().any(|a| a.get_long() == Some(f)), "--{f}");
        }
    }

    #[test]
    fn values_are_checked_and_collected() {
        let f =
            parse(&["--frames", "10-20", "--flush-every-submit", "--compression", "none", "--set", "shadow-reads=on"])
                .unwrap();
        assert_eq!(f.get("FRAMES"), Some("10-20"));
        assert_eq!(f.get("FLUSH_EVERY_SUBMIT"), Some("1"));
        assert_eq!(f.get("COMPRESSION"), Some("none"));
        assert_eq!(f.get("SHADOW_READS"), Some("on"));
        let f = parse(&["--set", "VKDIRTY_BACKEND=full", "--backend", "shadow"]).unwrap();
        assert_eq!(f.get("BACKEND"), Some("shadow"), "the named flag wins over --set");
        let e = parse(&["--compression", "zstd"]).unwrap_err().to_string();
        assert!(e.contains("lz4, none"), "{e}");
        let e = parse(&["--set", "NOPE=1"]).unwrap_err().to_string();
        assert!(e.contains("unknown setting") && e.contains("TRACE_FILE"), "{e}");
        let e = parse(&["--set", "frames"]).unwrap_err().to_string();
        assert!(e.contains("NAME=VALUE"), "{e}");
        let e = parse(&["--trigger-signal", "SIGSEGV"]).unwrap_err().to_string();
        assert!(e.contains("SIGUSR1"), "{e}");
    }
}
