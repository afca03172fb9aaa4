//! Functions every policy can call, registered on the sandbox before it is hardened:
//! time and date (`hour`, `weekday`, `date`, `parse_time`), `glob_match` and `cidr_match`.
//!
//! Each is pure and cheap; a bad argument (an unparsable CIDR, time or offset) is a runtime
//! error, so the policy denies (fails closed) and the log says which call.

use std::net::IpAddr;

use ipnet::IpNet;
use rhai::{Array, Engine, EvalAltResult};
use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Registers the helpers on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    engine
        .register_fn("hour", |t: i64| hour(t, "Z"))
        .register_fn("hour", hour)
        .register_fn("minute", |t: i64| at(t, "Z").map(|d| i64::from(d.minute())))
        .register_fn("minute", |t: i64, offset: &str| {
            at(t, offset).map(|d| i64::from(d.minute()))
        })
        .register_fn("weekday", |t: i64| weekday(t, "Z"))
        .register_fn("weekday", weekday)
        .register_fn("date", |t: i64| date(t, "Z"))
        .register_fn("date", date)
        .register_fn("parse_time", parse_time)
        .register_fn("glob_match", |pattern: &str, text: &str| {
            glob_match::glob_match(pattern, text)
        })
        .register_fn("cidr_match", cidr_match)
        // `request.ip` is `()` when the address is unknown: in no range.
        .register_fn("cidr_match", |cidr: &str, _: ()| cidr_match(cidr, ""))
        .register_fn("cidr_match", |cidrs: Array, _: ()| -> Res<bool> {
            for cidr in cidrs {
                let cidr = cidr
                    .into_immutable_string()
                    .map_err(|t| format!("cidr_match: expected an array of strings, found {t}"))?;
                cidr_match(&cidr, "")?;
            }
            Ok(false)
        })
        .register_fn("cidr_match", |cidrs: Array, ip: &str| -> Res<bool> {
            for cidr in cidrs {
                let cidr = cidr
                    .into_immutable_string()
                    .map_err(|t| format!("cidr_match: expected an array of strings, found {t}"))?;
                if cidr_match(&cidr, ip)? {
                    return Ok(true);
                }
            }
            Ok(false)
        });
}

/// `t` (unix seconds) in the zone `offset` (`"Z"`, `"+02:00"`, `"-05:30"`).
fn at(t: i64, offset: &str) -> Res<OffsetDateTime> {
    let offset = parse_offset(offset)?;
    let utc = OffsetDateTime::from_unix_timestamp(t).map_err(|_| format!("time {t} is out of range"))?;
    Ok(utc.to_offset(offset))
}

fn parse_offset(s: &str) -> Res<UtcOffset> {
    if s == "Z" || s == "z" {
        return Ok(UtcOffset::UTC);
    }
    let bad = || -> Box<EvalAltResult> { format!("invalid UTC offset `{s}`: use \"Z\" or \"+HH:MM\"").into() };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i8, &s[1..]),
        Some(b'-') => (-1i8, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    // Real zones lie within -12:00 and +14:00.
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

/// Hour of the day, 0–23.
fn hour(t: i64, offset: &str) -> Res<i64> {
    at(t, offset).map(|d| i64::from(d.hour()))
}

/// Day of the week in lowercase English: `"monday"` … `"sunday"`.
fn weekday(t: i64, offset: &str) -> Res<String> {
    at(t, offset).map(|d| d.weekday().to_string().to_lowercase())
}

/// `YYYY-MM-DD`.
fn date(t: i64, offset: &str) -> Res<String> {
    let d = at(t, offset)?;
    Ok(format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
}

/// RFC 3339 (`2026-12-03T10:00:00Z`) to unix seconds.
fn parse_time(s: &str) -> Res<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|e| format!("parse_time: `{s}` is not an RFC 3339 time: {e}").into())
}

/// Whether `ip` lies in `cidr` (`"10.0.0.0/8"`, `"2001:db8::/32"`, or a bare address). An
/// unparsable CIDR is an error (a typo must not silently deny or allow); an unparsable or empty
/// `ip` (e.g. no client address) is simply not inside.
fn cidr_match(cidr: &str, ip: &str) -> Res<bool> {
    let net: IpNet = match cidr.parse() {
        Ok(net) => net,
        Err(_) => match cidr.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(format!("cidr_match: `{cidr}` is not a CIDR such as \"10.0.0.0/8\"").into()),
        },
    };
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return Ok(false);
    };
    // An IPv4 client seen through an IPv6 socket (`::ffff:10.1.2.3`) matches IPv4 ranges.
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    Ok(net.contains(&addr))
}

#[cfg(test)]
mod tests {
    use rhai::Dynamic;

    use super::*;

    fn eval(src: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        let mut engine = Engine::new();
        register(&mut engine);
        engine.eval::<Dynamic>(src)
    }

    fn truthy(src: &str) -> bool {
        eval(src).unwrap().as_bool().unwrap()
    }

    #[test]
    fn time_helpers() {
        // 2026-12-03T19:45:30Z is a Thursday.
        let t = 1_796_327_130_i64;
        assert!(truthy(&format!("hour({t}) == 19 && minute({t}) == 45")));
        assert!(truthy(&format!(r#"weekday({t}) == "thursday""#)));
        assert!(truthy(&format!(r#"date({t}) == "2026-12-03""#)));
        assert!(truthy(&format!(
            r#"hour({t}, "+05:30") == 1 && weekday({t}, "+05:30") == "friday" && date(0, "-05:00") == "1969-12-31""#
        )));
        assert!(truthy(&format!(r#"parse_time("2026-12-03T19:45:30Z") == {t}"#)));
        assert!(truthy(&format!(r#"parse_time("2026-12-03T20:45:30+01:00") == {t}"#)));
        for bad in [
            r#"hour(0, "CET")"#,
            r#"hour(0, "+25:00")"#,
            r#"parse_time("yesterday")"#,
        ] {
            assert!(eval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_helper() {
        assert!(truthy(r#"glob_match("reports/**/*.pdf", "reports/2026/q4/x.pdf")"#));
        assert!(truthy(
            r#"glob_match("team-*", "team-red") && !glob_match("team-*", "teams")"#
        ));
        assert!(truthy(r#"glob_match("{a,b}?", "bx") && !glob_match("{a,b}?", "cx")"#));
    }

    #[test]
    fn cidr_helper() {
        assert!(truthy(r#"cidr_match("10.0.0.0/8", "10.1.2.3")"#));
        assert!(truthy(r#"!cidr_match("10.0.0.0/8", "11.1.2.3")"#));
        assert!(truthy(r#"cidr_match("10.0.0.0/8", "::ffff:10.1.2.3")"#));
        assert!(truthy(r#"cidr_match("2001:db8::/32", "2001:db8::1")"#));
        assert!(truthy(r#"cidr_match("127.0.0.1", "127.0.0.1")"#));
        assert!(truthy(r#"cidr_match(["192.168.0.0/16", "10.0.0.0/8"], "10.9.9.9")"#));
        assert!(truthy(
            r#"!cidr_match("10.0.0.0/8", "") && !cidr_match("10.0.0.0/8", "garbage")"#
        ));
        assert!(truthy(
            r#"!cidr_match("10.0.0.0/8", ()) && !cidr_match(["10.0.0.0/8"], ())"#
        ));
        assert!(eval(r#"cidr_match("10.0.0.0/33", "10.0.0.1")"#).is_err());
        assert!(eval(r#"cidr_match("nonsense", ())"#).is_err());
        assert!(eval(r#"cidr_match([1], "10.0.0.1")"#).is_err());
    }
}
