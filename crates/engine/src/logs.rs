//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2026-11-25T07:00:00.123456789Z"}`,
//! so tools that read Docker's log files read ours. The monitor writes
//! ([`LogWriter`], with size-based rotation to `<log>.1`, `<log>.2`, …);
//! the daemon reads ([`read`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The bytes (a line with its newline, or a partial line).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// Longest line kept whole; longer output is split (Docker uses 16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// Appends log entries, rotating by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    /// Rotate when the file reaches this size (0: never).
    max_size: u64,
    /// Files kept including the current one (≥ 1).
    max_files: u32,
    /// Unterminated output per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

/// Parses Docker's `max-size` (`10m`, `1g`, `512k`, bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1024),
        'm' => (&s[..s.len() - 1], 1024 * 1024),
        'g' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        'b' => (&s[..s.len() - 1], 1),
        _ => (s.as_str(), 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).custom_flags(libc::O_CLOEXEC).open(path)
}

impl LogWriter {
    /// Opens (creating) the log at `path`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Records output of `stream` (1 = stdout, 2 = stderr): complete lines
    /// become entries; a trailing partial line waits for more (or for
    /// [`LogWriter::flush_partial`]).
    pub fn write(&mut self, stream: u8, data: &[u8]) -> std::io::Result<()> {
        let idx = usize::from(stream == 2);
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl + 1;
            self.entry(idx, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(idx, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.partial[idx] = buf[start..].to_vec();
        Ok(())
    }

    /// Writes out unterminated output (at exit).
    pub fn flush_partial(&mut self) -> std::io::Result<()> {
        for idx in 0..2 {
            let p = std::mem::take(&mut self.partial[idx]);
            if !p.is_empty() {
                self.entry(idx, &p)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, idx: usize, bytes: &[u8]) -> std::io::Result<()> {
        let e = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: if idx == 0 { "stdout" } else { "stderr" }.into(),
            time: berth_runtime::state::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.max_files <= 1 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(name(self.max_files - 1));
            for n in (1..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            std::fs::rename(&self.path, name(1))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// stdout entries.
    pub stdout: bool,
    /// stderr entries.
    pub stderr: bool,
    /// Only the last N entries.
    pub tail: Option<usize>,
    /// Only entries at or after this unix time (seconds, fractional).
    pub since: Option<f64>,
    /// Only entries before this unix time.
    pub until: Option<f64>,
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp with optional
/// fraction (what the writer produces).
pub fn parse_time(s: &str) -> Option<f64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let rest = rest.trim_end_matches('Z');
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let t: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    if t.len() != 3 {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let frac: f64 = format!("0.{}", frac.trim_end_matches(|c: char| !c.is_ascii_digit())).parse().unwrap_or(0.0);
    Some(secs as f64 + frac)
}

/// Reads the entries of a log (rotated files first), filtered.
pub fn read(path: &Path, opts: &ReadOptions) -> std::io::Result<Vec<Entry>> {
    read_with_offset(path, opts).map(|(e, _)| e)
}

/// [`read`], also returning how many bytes of the current file it
/// consumed (whole lines only), so a follower continues exactly there.
pub fn read_with_offset(path: &Path, opts: &ReadOptions) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut files = Vec::new();
    for n in (1..100).rev() {
        let mut p = path.to_path_buf().into_os_string();
        p.push(format!(".{n}"));
        if Path::new(&p).exists() {
            files.push(PathBuf::from(p));
        }
    }
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    let mut consumed = 0u64;
    let last = files.len() - 1;
    for (i, f) in files.iter().enumerate() {
        let Ok(file) = File::open(f) else { continue };
        let mut r = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                // EOF, or a line still being written: the follower gets it.
                break;
            }
            if i == last {
                consumed += n as u64;
            }
            let Ok(e) = serde_json::from_slice::<Entry>(&line) else { continue };
            if accept(&e, opts) {
                out.push(e);
            }
        }
    }
    if let Some(n) = opts.tail {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    Ok((out, consumed))
}

/// Whether an entry passes the stream and time filters.
pub fn accept(e: &Entry, opts: &ReadOptions) -> bool {
    let stream_ok = (e.stream == "stdout" && opts.stdout) || (e.stream == "stderr" && opts.stderr);
    let t = parse_time(&e.time).unwrap_or(0.0);
    stream_ok && opts.since.is_none_or(|s| t >= s) && opts.until.is_none_or(|u| t < u)
}

/// Follows a log from byte `offset` of the current file: returns new
/// entries and the new offset (after rotation, starts the new file at 0).
pub fn read_from(path: &Path, offset: u64, opts: &ReadOptions) -> std::io::Result<(Vec<Entry>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    // Only whole lines; a line being written is picked up next time.
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for line in buf[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if let Ok(e) = serde_json::from_slice::<Entry>(line) {
            if accept(&e, opts) {
                out.push(e);
            }
        }
    }
    Ok((out, offset + complete as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_rotation() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("c-json.log");
        let mut w = LogWriter::open(&p, 300, 2).expect("open");
        w.write(1, b"hello\nwor").expect("w");
        w.write(2, b"oops\n").expect("w");
        w.write(1, b"ld\n").expect("w");
        w.write(1, b"tail").expect("w");
        w.flush_partial().expect("flush");
        let all = ReadOptions { stdout: true, stderr: true, ..Default::default() };
        let e = read(&p, &all).expect("read");
        let logs: Vec<(&str, &str)> = e.iter().map(|e| (e.stream.as_str(), e.log.as_str())).collect();
        assert_eq!(logs, vec![("stdout", "hello\n"), ("stderr", "oops\n"), ("stdout", "world\n"), ("stdout", "tail")]);
        let only_err = ReadOptions { stderr: true, ..Default::default() };
        assert_eq!(read(&p, &only_err).expect("read").len(), 1);
        let tail = ReadOptions { tail: Some(1), ..all.clone() };
        assert_eq!(read(&p, &tail).expect("read")[0].log, "tail");
        // Rotation keeps two files and every recent entry in order.
        for i in 0..20 {
            w.write(1, format!("line {i}\n").as_bytes()).expect("w");
        }
        let mut rotated = p.clone().into_os_string();
        rotated.push(".1");
        assert!(Path::new(&rotated).exists());
        let e = read(&p, &all).expect("read");
        assert_eq!(e.last().map(|e| e.log.as_str()), Some("line 19\n"));
        assert!(std::fs::metadata(&p).expect("stat").len() <= 300);
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(parse_time("2026-11-25T06:04:51Z"), Some(1_795_586_691.0));
    }
}
