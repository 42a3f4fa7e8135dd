//! Reading a `--trace` file: one [`Record`] per line, sorted by start
//! time, in a [`Trace`].

/// One line of a trace.
#[derive(Clone, Debug)]
pub struct Record {
    pub kind: String,
    pub pid: i32,
    pub tid: i32,
    pub start: u64,
    pub end: u64,
    pub arg: u64,
    pub label: String,
}

pub struct Trace {
    pub records: Vec<Record>,
}

impl Trace {
    pub fn parse(text: &str) -> Result<Trace, String> {
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.splitn(7, ' ');
            let mut next = || parts.next().ok_or(format!("line {}: too short", n + 1));
            let kind = next()?.to_string();
            let num = |s: &str| -> Result<u64, String> {
                s.parse()
                    .map_err(|_| format!("line {}: {s:?} is not a number", n + 1))
            };
            let pid = num(next()?)? as i32;
            let tid = num(next()?)? as i32;
            let start = num(next()?)?;
            let end = num(next()?)?;
            let arg = num(next()?)?;
            let label = parts.next().unwrap_or("").to_string();
            records.push(Record {
                kind,
                pid,
                tid,
                start,
                end,
                arg,
                label,
            });
        }
        records.sort_by_key(|r| r.start);
        Ok(Trace { records })
    }

    pub fn read(path: &std::path::Path) -> Result<Trace, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Trace::parse(&text)
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.kind == kind)
    }

    /// Whether the master of stage 3 wrote events (a workers timeline).
    pub fn has_workers(&self) -> bool {
        self.of_kind("spawn").next().is_some()
    }

    pub(super) fn first(&self) -> u64 {
        self.records.iter().map(|r| r.start).min().unwrap_or(0)
    }
}
