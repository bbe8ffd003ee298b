//! Kernel CPU lists (`0-3,8,10-11`): the form sysfs, the kernel command line and
//! profiles use for sets of CPU ids.

/// Formats CPU ids as a kernel cpulist (`0-3,8,10-11`). Input need not be
/// sorted; duplicates are ignored.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses a kernel cpulist (`0-3,8,10-11`) into ascending, distinct ids.
/// Spaces around items are allowed. The error says which item is wrong.
pub fn parse_cpulist(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in CPU list {text:?}: write ids and ranges like \"0-3,8\""
            ));
        }
        let id = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("{item:?} is not a CPU id or range: write ids and ranges like \"0-3,8\"")
            })
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!(
                        "range {item:?} is backwards: write the lower id first"
                    ));
                }
                if b - a > 65_535 {
                    return Err(format!("range {item:?} is too large"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(id(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        for (text, ids) in [
            ("0", vec![0]),
            ("0-3,8,10-11", vec![0, 1, 2, 3, 8, 10, 11]),
            ("1,3,5", vec![1, 3, 5]),
        ] {
            assert_eq!(parse_cpulist(text).expect(text), ids);
            assert_eq!(format_cpulist(&ids), text);
        }
        assert_eq!(format_cpulist(&[3, 1, 2, 2]), "1-3");
        assert_eq!(format_cpulist(&[]), "");
        assert_eq!(parse_cpulist(" 0 - 1 , 4").expect("spaces"), [0, 1, 4]);
    }

    proptest::proptest! {
        #[test]
        fn cpulists_round_trip_any_set(ids in proptest::collection::btree_set(0u32..512, 0..64)) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let text = format_cpulist(&ids);
            if ids.is_empty() {
                proptest::prop_assert_eq!(text, "");
            } else {
                proptest::prop_assert_eq!(parse_cpulist(&text).expect("formatted lists parse"), ids);
            }
        }

        #[test]
        fn parsing_gives_sorted_ids_or_a_reason(text in "[0-9, -]{0,24}") {
            match parse_cpulist(&text) {
                Ok(ids) => {
                    proptest::prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    proptest::prop_assert_eq!(parse_cpulist(&format_cpulist(&ids)).ok(), Some(ids));
                }
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }
    }

    #[test]
    fn bad_cpulists_say_what_is_wrong() {
        assert!(parse_cpulist("").unwrap_err().contains("empty item"));
        assert!(parse_cpulist("3-1").unwrap_err().contains("backwards"));
        assert!(parse_cpulist("a").unwrap_err().contains("not a CPU id"));
        assert!(
            parse_cpulist("0-9999999")
                .unwrap_err()
                .contains("too large")
        );
    }
}
