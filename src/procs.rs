//! The process table, read from `/proc` (Linux): which process is whose
//! child, and whether it still runs. The tests use it to check that a master
//! runs the workers it should and leaves none behind; the harness, to kill a
//! server's whole tree; the benchmarks, to add up a server's CPU time.
//! Where there is no `/proc` (macOS) every list is empty.

use std::collections::HashMap;

/// The fields of `/proc/PID/stat` after the command name, from `state` on
/// (the command name may hold spaces and parentheses, so it is skipped).
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// pid -> parent pid, for every process, zombies included.
pub fn parent_map() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1).and_then(|p| p.parse().ok())) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The process exists and is not a zombie (exited, waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// The live processes whose parent is `pid`, sorted.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = parent_map()
        .into_iter()
        .filter(|&(child, parent)| parent == pid && alive(child))
        .map(|(child, _)| child)
        .collect();
    out.sort();
    out
}

/// `root` and everything below it (children, grandchildren, ...), zombies included.
pub fn process_tree(root: u32) -> Vec<u32> {
    let parents = parent_map();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// The live processes below `root`, not `root` itself.
pub fn descendants(root: u32) -> Vec<u32> {
    process_tree(root)
        .into_iter()
        .skip(1)
        .filter(|&pid| alive(pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_found_and_then_gone() {
        let me = std::process::id();
        assert!(alive(me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(children(me).contains(&pid));
        assert!(descendants(me).contains(&pid));
        assert!(process_tree(me).contains(&me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children(me).contains(&pid));
    }
}
