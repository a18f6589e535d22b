//! Time: timestamps are integer milliseconds since the Unix epoch, read from an injectable
//! [`Clock`] so that lease expiry and backoff are tested without sleeping. Durations are
//! written the way people write them (`30s`, `5m`, `2h`, `1500ms`) or as integer milliseconds.

use crate::error::{Code, Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The source of "now" for every operation.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the epoch.
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to: for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Millis) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start)))
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats a timestamp as RFC 3339 with millisecond precision, in UTC. Hand-written
/// (Howard Hinnant's civil-from-days): every stored entity carries several timestamps, and
/// this runs on the writer's hot path.
pub fn format_rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    }
    // Digit by digit into a fixed buffer: every task, run and event written carries several
    // timestamps, and `format!` here was ~5% of the writer thread's time.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, millis);
    out.iter().map(|&b| b as char).collect()
}

/// Parses an RFC 3339 timestamp (or integer milliseconds) into milliseconds.
pub fn parse_timestamp(text: &str) -> Result<Millis> {
    let ms = match text.trim().parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                Error::invalid(
                format!("'{text}' is not a timestamp"),
                "use RFC 3339, e.g. 2026-12-01T12:00:00Z, or integer milliseconds since the epoch",
            )
            })?,
    };
    check_timestamp(ms)
}

/// 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the timestamps Baton accepts. Every
/// accepted timestamp must format as RFC 3339 and parse back, or a stored task could no
/// longer be read.
pub const TIMESTAMP_RANGE: std::ops::RangeInclusive<Millis> = 0..=253_402_300_799_999;

/// Accepts a timestamp inside [`TIMESTAMP_RANGE`].
pub fn check_timestamp(ms: Millis) -> Result<Millis> {
    if TIMESTAMP_RANGE.contains(&ms) {
        Ok(ms)
    } else {
        Err(Error::invalid(
            format!("timestamp {ms} is out of range"),
            "give a time between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
        ))
    }
}

/// A span of time in milliseconds that reads and writes as `30s`, `5m`, `2h`, `1500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

/// The longest duration accepted anywhere: 365 days. Longer values are almost certainly a
/// unit mistake.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;

impl Duration {
    /// From whole seconds.
    pub const fn secs(s: u64) -> Self {
        Duration(s * 1000)
    }
    /// The length in milliseconds.
    pub fn ms(self) -> i64 {
        self.0 as i64
    }

    /// Parses `30s`, `5m`, `2h`, `1d`, `250ms` or `0`: a unit is required, since text is
    /// written by people (a JSON integer, read by [`Duration`]'s `Deserialize`, is
    /// milliseconds).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::new(
                Code::InvalidDuration,
                format!("'{text}' is not a duration"),
                "write a whole number with a unit: 250ms, 30s, 5m, 2h, 1d",
            )
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        // Written by people (flags, files): a number without a unit is too easily meant as
        // seconds. Only JSON integers (programs' input) are read as milliseconds.
        if unit.is_empty() && n != 0 {
            return Err(Error::new(
                Code::InvalidDuration,
                format!("duration '{text}' has no unit"),
                format!("write {n}s, {n}m or {n}ms (units: ms, s, m, h, d)"),
            ));
        }
        let factor = match unit {
            "" | "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let ms = n
            .checked_mul(factor)
            .filter(|ms| *ms <= MAX_DURATION_MS)
            .ok_or_else(|| {
                Error::new(
                    Code::InvalidDuration,
                    format!("duration '{text}' is too long"),
                    "durations are at most 365d",
                )
            })?;
        Ok(Duration(ms))
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

/// OpenAPI: a duration is a string with a unit, or integer milliseconds.
impl utoipa::PartialSchema for Duration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]+(ms|s|m|h|d)?$"))
                    .examples([serde_json::json!("5s")]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_DURATION_MS as f64)),
            )
            .description(Some(
                "A duration: 250ms, 30s, 5m, 2h, 1d, or integer milliseconds; at most 365d. \
                 Responses always use the string form.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Duration {}

/// OpenAPI stand-in for a timestamp in a response: an RFC 3339 string in UTC.
#[derive(Debug)]
pub struct Rfc3339;

impl utoipa::PartialSchema for Rfc3339 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples([serde_json::json!("2026-11-24T09:30:00.000Z")])
            .into()
    }
}

impl utoipa::ToSchema for Rfc3339 {}

/// OpenAPI stand-in for a timestamp in a request: RFC 3339, or integer milliseconds since
/// the Unix epoch.
#[derive(Debug)]
pub struct TimeInput;

impl utoipa::PartialSchema for TimeInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .description(Some(
                "RFC 3339 (e.g. 2026-11-24T09:30:00Z) or milliseconds since 1970",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TimeInput {}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// What a duration read from JSON expects. Every refusal of one ends with it (serde's own
/// "invalid type … expected" included), so that a request body's reader can tell a bad
/// duration from other bad input and answer `INVALID_DURATION`, as for one given as text.
pub const DURATION_EXPECTED: &str = "a duration like 30s, 5m or 2h, or integer milliseconds";

/// Reads an optional duration from text only (`30s`), for documents people write (plans):
/// there a bare `3600` would silently be 3.6 seconds.
pub fn text_only<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => {
            serde::de::Visitor::visit_str(DurationVisitor, &text).map(Some)
        }
        Some(serde_json::Value::Number(n)) => Err(serde::de::Error::custom(format!(
            "{n} has no unit: write \"{n}s\", \"{n}m\" or \"{n}ms\"; expected {DURATION_EXPECTED}"
        ))),
        Some(other) => Err(serde::de::Error::custom(format!(
            "invalid type: {other}, expected {DURATION_EXPECTED}"
        ))),
    }
}

/// Whether a deserializer's message (its position left out) is a refused duration.
pub fn is_duration_fault(message: &str) -> bool {
    message.ends_with(DURATION_EXPECTED)
}

/// Reads a duration as text (`30s`) or integer milliseconds, straight from the input: every
/// task a write job loads carries one, so no buffering and no trial-and-error parse.
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(DURATION_EXPECTED)
    }

    fn visit_u64<E: serde::de::Error>(self, ms: u64) -> std::result::Result<Duration, E> {
        if ms <= MAX_DURATION_MS {
            Ok(Duration(ms))
        } else {
            Err(E::custom(format!(
                "duration too long (at most 365d): expected {DURATION_EXPECTED}"
            )))
        }
    }

    fn visit_i64<E: serde::de::Error>(self, ms: i64) -> std::result::Result<Duration, E> {
        match u64::try_from(ms) {
            Ok(ms) => self.visit_u64(ms),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(ms), &self)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Duration, E> {
        Duration::parse(text)
            .map_err(|e| E::custom(format!("{}: expected {DURATION_EXPECTED}", e.message)))
    }
}

/// Serde helpers for timestamps: RFC 3339 strings on the wire, milliseconds in memory.
pub mod rfc3339 {
    use super::*;

    /// Serializes milliseconds as RFC 3339.
    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*ms))
    }
    /// Reads RFC 3339 or integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Millis, D::Error> {
        d.deserialize_any(TimestampVisitor)
    }

    /// Reads a timestamp straight from the input (a task carries several; no buffering).
    struct TimestampVisitor;

    impl<'de> serde::de::Visitor<'de> for TimestampVisitor {
        type Value = Millis;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or integer milliseconds since 1970")
        }

        fn visit_i64<E: serde::de::Error>(self, ms: i64) -> std::result::Result<Millis, E> {
            Ok(ms)
        }

        fn visit_u64<E: serde::de::Error>(self, ms: u64) -> std::result::Result<Millis, E> {
            i64::try_from(ms).map_err(|_| E::custom("bad timestamp"))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Millis, E> {
            parse_timestamp(text).map_err(|e| E::custom(e.message))
        }
    }

    /// The same for optional timestamps.
    pub mod option {
        use super::*;
        /// Serializes optional milliseconds as RFC 3339 or null.
        pub fn serialize<S: Serializer>(
            ms: &Option<Millis>,
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&format_rfc3339(*ms)),
                None => s.serialize_none(),
            }
        }
        /// Reads an optional RFC 3339 string or integer milliseconds.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> std::result::Result<Option<Millis>, D::Error> {
            d.deserialize_option(OptionalTimestamp)
        }

        struct OptionalTimestamp;

        impl<'de> serde::de::Visitor<'de> for OptionalTimestamp {
            type Value = Option<Millis>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp, integer milliseconds since 1970, or null")
            }

            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Self::Value, D::Error> {
                super::deserialize(d).map(Some)
            }
        }
    }

    /// The same for a timestamp a patch may clear: left out (`None`, not written), null
    /// (`Some(None)`), or a time.
    pub mod clearable {
        use super::*;
        /// Serializes a set timestamp as RFC 3339 and a cleared one as null.
        pub fn serialize<S: Serializer>(
            ms: &Option<Option<Millis>>,
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            super::option::serialize(&ms.flatten(), s)
        }
        /// Reads null as "clear" and anything else as a timestamp; a left-out field never
        /// reaches here (`#[serde(default)]`).
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> std::result::Result<Option<Option<Millis>>, D::Error> {
            super::option::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, ms, printed) in [
            ("30s", 30_000, "30s"),
            ("5m", 300_000, "5m"),
            ("2h", 7_200_000, "2h"),
            ("1500ms", 1500, "1500ms"),
            ("0", 0, "0ms"),
            ("90s", 90_000, "90s"),
        ] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(d.0, ms);
            assert_eq!(d.to_string(), printed);
        }
        for bad in [
            "",
            "s",
            "5 m",
            "5x",
            "-3s",
            "1.5s",
            "99999999999999999999s",
            "400d",
            "30",
        ] {
            let err = Duration::parse(bad).unwrap_err();
            assert_eq!(err.code, Code::InvalidDuration, "{bad}");
        }
    }

    #[test]
    fn fast_formatting_matches_chrono() {
        for ms in [
            0i64,
            951_782_400_000,
            1_767_225_600_123,
            4_102_444_799_999,
            1_709_164_800_000,
            -86_400_001,
            -1,
            -62_135_596_800_000,
            -62_167_219_200_000,
        ]
        .into_iter()
        // And a walk across the accepted range, every digit position turning over.
        .chain((0..20_000).map(|i| {
            let (lo, hi) = (*TIMESTAMP_RANGE.start(), *TIMESTAMP_RANGE.end());
            lo + (hi - lo) / 20_000 * i + i * 7_919
        })) {
            let expected = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(format_rfc3339(ms), expected, "{ms}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let ms = parse_timestamp("2026-12-01T12:00:00Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-12-01T12:00:00.000Z");
        assert!(parse_timestamp("yesterday").is_err());
        for bad in ["999999999999999", "-1", "10000-01-01T00:00:00Z"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
        for edge in [*TIMESTAMP_RANGE.start(), *TIMESTAMP_RANGE.end()] {
            assert_eq!(
                parse_timestamp(&format_rfc3339(edge)).unwrap(),
                edge,
                "round trip of {edge}"
            );
        }
    }

    #[test]
    fn durations_and_timestamps_read_from_json_text_or_integers() {
        #[derive(Deserialize)]
        struct Row {
            ttl: Duration,
            #[serde(with = "rfc3339")]
            at: Millis,
            #[serde(default, with = "rfc3339::option")]
            due: Option<Millis>,
        }
        let read = |json: &str| serde_json::from_str::<Row>(json);
        let row = read(r#"{"ttl": "30s", "at": "2026-12-01T12:00:00Z", "due": 1500}"#).unwrap();
        assert_eq!(
            (row.ttl.0, row.at, row.due),
            (30_000, 1_796_126_400_000, Some(1500))
        );
        let row = read(r#"{"ttl": 2500, "at": 7, "due": null}"#).unwrap();
        assert_eq!((row.ttl.0, row.at, row.due), (2500, 7, None));
        assert_eq!(read(r#"{"ttl": "1m", "at": 7}"#).unwrap().due, None);
        for bad in [
            r#"{"ttl": -5, "at": 7}"#,
            r#"{"ttl": 1.5, "at": 7}"#,
            r#"{"ttl": "5x", "at": 7}"#,
            r#"{"ttl": true, "at": 7}"#,
            r#"{"ttl": 31536000001, "at": 7}"#,
            r#"{"ttl": "1s", "at": "yesterday"}"#,
            r#"{"ttl": "1s", "at": 1.5}"#,
            r#"{"ttl": "1s", "at": null}"#,
            r#"{"ttl": "1s", "at": 7, "due": "soon"}"#,
            r#"{"ttl": "1s", "at": 7, "due": [1]}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
