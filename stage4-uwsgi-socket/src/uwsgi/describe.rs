//! A packet as a hexdump with its fields named: what `uwsgi-dump` prints.

use super::HEADER_LEN;

/// A hexdump of a packet with its fields named, for the lab that shows what
/// nginx sends.
pub fn describe_packet(packet: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if packet.len() < HEADER_LEN {
        let _ = writeln!(out, "(only {} bytes: no complete header)", packet.len());
        return out;
    }
    let size = u16::from_le_bytes([packet[1], packet[2]]) as usize;
    let _ = writeln!(
        out,
        "{:02x} {:02x} {:02x} {:02x}      header: modifier1={} datasize={} (0x{:02x}{:02x} little-endian) modifier2={}",
        packet[0],
        packet[1],
        packet[2],
        packet[3],
        packet[0],
        size,
        packet[2],
        packet[1],
        packet[3]
    );
    let end = (HEADER_LEN + size).min(packet.len());
    let mut pos = HEADER_LEN;
    while pos + 2 <= end {
        let key_len = u16::from_le_bytes([packet[pos], packet[pos + 1]]) as usize;
        let key_end = (pos + 2 + key_len).min(end);
        let key = String::from_utf8_lossy(&packet[pos + 2..key_end]).to_string();
        if key_end + 2 > end {
            let _ = writeln!(out, "(truncated after key {key:?})");
            break;
        }
        let val_len = u16::from_le_bytes([packet[key_end], packet[key_end + 1]]) as usize;
        let val_end = (key_end + 2 + val_len).min(end);
        let value = String::from_utf8_lossy(&packet[key_end + 2..val_end]).to_string();
        let raw: Vec<String> = packet[pos..val_end.min(pos + 12)]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<36} {key_len:>3} {key} = {val_len:>3} {value:?}",
            format!(
                "{}{}",
                raw.join(" "),
                if val_end > pos + 12 { " …" } else { "" }
            )
        );
        pos = val_end;
    }
    if packet.len() > end {
        let _ = writeln!(out, "… then {} bytes of body", packet.len() - end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uwsgi::encode_packet;

    fn sample() -> Vec<u8> {
        encode_packet(&[
            ("REQUEST_METHOD", b"POST"),
            ("PATH_INFO", b"/echo"),
            ("CONTENT_LENGTH", b"5"),
            ("HTTP_HOST", b"example.test"),
        ])
        .unwrap()
    }

    #[test]
    fn the_dump_names_the_fields() {
        let text = describe_packet(&sample());
        assert!(text.contains("modifier1=0"), "{text}");
        assert!(text.contains("REQUEST_METHOD = "), "{text}");
        assert!(text.contains("\"/echo\""), "{text}");
    }
}
