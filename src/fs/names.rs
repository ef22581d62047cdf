//! Names across platforms: the one Unicode form on the wire, names that cannot exist on
//! Windows, paths that collide after normalisation or case folding, and symlink targets that
//! stay inside the folder. Pure functions, no I/O.

use std::borrow::Cow;
use std::collections::HashMap;

use unicode_normalization::{is_nfc, UnicodeNormalization};

use super::is_metadata_name;

/// Longest accepted symlink target in bytes (Linux's `PATH_MAX` less the NUL).
pub const MAX_SYMLINK_TARGET_BYTES: usize = 4095;

/// `name` in Unicode NFC, the one normal form on the wire (macOS file systems hand out NFD;
/// without one form, "é" typed on a Mac and on Linux would be two different files).
/// Borrowed when already NFC (almost always), so the common case does not allocate.
pub fn to_wire(name: &str) -> Cow<'_, str> {
    if name.is_ascii() || is_nfc(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    }
}

/// Characters Windows refuses in a name (besides the controls, checked separately).
const WINDOWS_FORBIDDEN: &[char] = &['<', '>', ':', '"', '\\', '|', '?', '*'];

/// Device names Windows reserves with any extension and in any case (`con.txt` is `CON`).
/// `COM0`/`LPT0` and the superscript digits are in Microsoft's list too.
fn is_windows_device(base: &str) -> bool {
    // The longest is `COM` with a superscript digit: 5 bytes.
    if !(3..=5).contains(&base.len()) {
        return false;
    }
    let upper = base.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let Some(rest) = upper
                .strip_prefix("COM")
                .or_else(|| upper.strip_prefix("LPT"))
            else {
                return false;
            };
            let mut chars = rest.chars();
            matches!(
                (chars.next(), chars.next()),
                (Some('0'..='9' | '¹' | '²' | '³'), None)
            )
        }
    }
}

/// Why the `/`-separated path `rel` cannot exist on Windows, or `None` if it can: a reserved
/// device name (with any extension, any case), a forbidden character or control character, or
/// a component ending in a dot or space (Windows strips those, so the name would change).
pub fn windows_problem(rel: &str) -> Option<String> {
    for comp in rel.split('/') {
        if let Some(c) = comp
            .chars()
            .find(|c| WINDOWS_FORBIDDEN.contains(c) || c.is_ascii_control())
        {
            return Some(if c.is_ascii_control() {
                format!("{comp:?} contains the control character {:#04x}", c as u32)
            } else {
                format!("{comp:?} contains {c:?}, which Windows does not allow in names")
            });
        }
        // Windows compares device names on what precedes the first dot, trailing spaces
        // dropped: `CON .txt` is the console too.
        let base = comp.split('.').next().unwrap_or(comp).trim_end_matches(' ');
        if is_windows_device(base) {
            return Some(format!(
                "{comp:?} is the reserved device name {base:?} on Windows"
            ));
        }
        if comp.ends_with('.') || comp.ends_with(' ') {
            return Some(format!(
                "{comp:?} ends with a dot or space, which Windows drops from names"
            ));
        }
    }
    None
}

/// Distinct paths that one file system would take for the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash {
    /// Equal after Unicode NFC (one NFC, one NFD spelling): the same name on macOS, and two
    /// names that look identical everywhere else.
    Normalization(Vec<String>),
    /// Equal after NFC and case folding but not after NFC alone: the same file on the
    /// case-insensitive file systems of Windows and macOS.
    Case(Vec<String>),
}

impl Clash {
    /// The clashing paths, sorted.
    pub fn paths(&self) -> &[String] {
        match self {
            Clash::Normalization(p) | Clash::Case(p) => p,
        }
    }
}

/// The key two paths share when a case-insensitive, normalising file system would take them
/// for one: NFC, then lowercase per character (not the context-sensitive `str::to_lowercase`,
/// so a final sigma folds like any other), with `ς` folded to `σ` as Unicode case folding does.
/// An approximation of the file systems' simple case folding, which is what they use.
pub fn fold_key(path: &str) -> String {
    // Most paths are ASCII: NFC leaves them alone and ASCII lowercasing is the whole fold.
    if path.is_ascii() {
        return path.to_ascii_lowercase();
    }
    let folded: String = to_wire(path)
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect();
    // Lowercasing can, rarely, leave a sequence that composes differently.
    to_wire(&folded).into_owned()
}

/// Whether `path` is its own [`fold_key`] for certain (lowercase ASCII): two such paths are
/// never the same name anywhere, so only paths that are not need grouping.
pub fn folds_to_itself(path: &str) -> bool {
    path.is_ascii() && !path.bytes().any(|b| b.is_ascii_uppercase())
}

/// Whether `path` may fail a name check (see `sync::session::check_local_names`): not
/// lowercase ASCII (so it may be non-NFC or clash in case or form with another), or not a
/// name Windows can hold. A path for which this is false passes every check.
pub fn is_odd(path: &str) -> bool {
    !folds_to_itself(path) || windows_problem(path).is_some()
}

/// Groups of distinct paths in `paths` that are the same after NFC ([`Clash::Normalization`])
/// or after NFC and case folding ([`Clash::Case`], when the group holds at least two NFC
/// spellings), each listing all its members, sorted; groups sorted by their first member.
/// Pass every path, folders included: `A/x` and `a/y` clash through their folders `A`, `a`.
/// One hash map of folded keys, so a million paths take one pass.
pub fn clashes<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<Clash> {
    // A lowercase ASCII path is its own key, so two such paths never clash: every clash has a
    // member with uppercase or non-ASCII letters. Only those, and the paths equal to one of
    // their keys, are grouped (in most folders, next to none).
    let paths: Vec<&'a str> = paths.into_iter().collect();
    let keys: std::collections::HashSet<String> = paths
        .iter()
        .filter(|p| !folds_to_itself(p))
        .map(|p| fold_key(p))
        .collect();
    if keys.is_empty() {
        return Vec::new();
    }
    let mut groups: HashMap<String, Vec<&'a str>> = HashMap::new();
    for p in paths
        .into_iter()
        .filter(|p| !folds_to_itself(p) || keys.contains(*p))
    {
        groups.entry(fold_key(p)).or_default().push(p);
    }
    let mut out: Vec<Clash> = groups
        .into_values()
        .filter_map(|mut members| {
            members.sort_unstable();
            members.dedup();
            if members.len() < 2 {
                return None;
            }
            let first = to_wire(members[0]);
            let one_form = members.iter().all(|m| to_wire(m) == first);
            let members = members.into_iter().map(str::to_owned).collect();
            Some(if one_form {
                Clash::Normalization(members)
            } else {
                Clash::Case(members)
            })
        })
        .collect();
    out.sort_unstable_by(|a, b| a.paths().cmp(b.paths()));
    out
}

/// The symlink `link_rel`'s `target`, normalised, if it is relative and, resolved lexically
/// from the link's folder, names something strictly inside the folder and outside `.ssp`:
/// `Ok` holds the shortest equivalent relative target (`..` only at its start, no `.` or empty
/// components), which is what a peer should create. `Err` says why not: empty, NUL, longer
/// than [`MAX_SYMLINK_TARGET_BYTES`], absolute, a backslash (a separator on Windows),
/// escaping the folder, or naming the folder root itself (through which `.ssp` is reachable)
/// or the metadata folder.
///
/// Lexical resolution is sound here because the result has no `..` after a named component:
/// the only folders it climbs out of are the link's own parents, which are real folders.
pub fn symlink_target_inside(link_rel: &str, target: &str) -> Result<String, &'static str> {
    if target.is_empty() {
        return Err("empty symlink target");
    }
    if target.contains('\0') {
        return Err("symlink target contains NUL");
    }
    if target.len() > MAX_SYMLINK_TARGET_BYTES {
        return Err("symlink target too long");
    }
    if target.starts_with('/') {
        return Err("absolute symlink target");
    }
    if target.contains('\\') {
        return Err("symlink target contains a backslash");
    }
    let parent: Vec<&str> = match link_rel.rsplit_once('/') {
        Some((parent, _)) => parent.split('/').collect(),
        None => Vec::new(),
    };
    let mut resolved = parent.clone();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if resolved.pop().is_none() {
                    return Err("symlink target points outside the folder");
                }
            }
            name => resolved.push(name),
        }
    }
    match resolved.first() {
        None => return Err("symlink target is the folder root"),
        Some(first) if is_metadata_name(first) => {
            return Err("symlink target points into the metadata folder")
        }
        Some(_) => {}
    }
    let common = parent
        .iter()
        .zip(&resolved)
        .take_while(|(a, b)| a == b)
        .count();
    let ups = std::iter::repeat("..").take(parent.len() - common);
    let normalised: Vec<&str> = ups.chain(resolved[common..].iter().copied()).collect();
    if normalised.is_empty() {
        // The target is the link's own folder ("." from "a/l"): name it from one level up.
        let last = parent.last().copied().unwrap_or_default();
        return Ok(format!("../{last}"));
    }
    Ok(normalised.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const E_NFC: &str = "\u{e9}"; // é, one code point
    const E_NFD: &str = "e\u{301}"; // e + combining acute

    #[test]
    fn to_wire_is_nfc_and_borrows_when_already_nfc() {
        // (input, expected output, borrowed?)
        let table = [
            ("plain.txt", "plain.txt", true),
            (E_NFC, E_NFC, true),
            (E_NFD, E_NFC, false),
            ("caf\u{65}\u{301}/x", "caf\u{e9}/x", false),
            // Hangul jamo compose to one syllable.
            ("\u{1100}\u{1161}", "\u{ac00}", false),
            ("", "", true),
        ];
        for (input, want, borrowed) in table {
            let got = to_wire(input);
            assert_eq!(got, want, "{input:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{input:?}");
        }
    }

    #[test]
    fn windows_problems_table() {
        // (path, what the reason must mention, or None when the path is fine on Windows)
        let table: &[(&str, Option<&str>)] = &[
            ("plain.txt", None),
            ("dir/sub/file.tar.gz", None),
            ("CON", Some("reserved")),
            ("CON.txt", Some("reserved")),
            ("con.tar.gz", Some("reserved")),
            ("dir/Nul", Some("reserved")),
            ("CON .txt", Some("reserved")),
            ("com1.log", Some("reserved")),
            ("LPT9", Some("reserved")),
            ("COM\u{b9}", Some("reserved")),
            ("COM10", None),
            ("CONSOLE", None),
            ("xcon", None),
            ("a:b", Some("':'")),
            ("dir/what?", Some("'?'")),
            ("x*y", Some("'*'")),
            ("<tag>", Some("'<'")),
            ("say\"hi\"", Some("'\"'")),
            ("a|b", Some("'|'")),
            ("a\\b", Some("'\\\\'")),
            ("tab\there", Some("control")),
            ("x.", Some("dot or space")),
            ("dir./f", Some("dot or space")),
            ("trailing ", Some("dot or space")),
            (" leading", None),
            (".hidden", None),
            ("\u{e9}t\u{e9}", None),
        ];
        for (path, want) in table {
            let got = windows_problem(path);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(g.contains(w), "{path:?}: {g}"),
                _ => panic!("{path:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn clashes_table() {
        let nfd_cafe = format!("caf{E_NFD}");
        let nfc_cafe = format!("caf{E_NFC}");
        let upper_nfd = format!("CAF{}", "E\u{301}");
        // (paths, expected clashes)
        let table: Vec<(Vec<&str>, Vec<Clash>)> = vec![
            (vec!["a", "b", "c/d"], vec![]),
            (
                vec!["a", "a"],
                vec![], /* the same path twice is no clash */
            ),
            (
                vec!["A", "a", "b"],
                vec![Clash::Case(vec!["A".into(), "a".into()])],
            ),
            (
                vec![&nfc_cafe, &nfd_cafe],
                vec![Clash::Normalization(vec![
                    nfd_cafe.clone(),
                    nfc_cafe.clone(),
                ])],
            ),
            // Two NFC spellings among three members: a case clash listing all three.
            (
                vec![&nfc_cafe, &nfd_cafe, &upper_nfd],
                vec![Clash::Case(vec![
                    upper_nfd.clone(),
                    nfd_cafe.clone(),
                    nfc_cafe.clone(),
                ])],
            ),
            (
                vec!["Dir/x", "dir/x", "dir/y", "README", "readme", "ReadMe"],
                vec![
                    Clash::Case(vec!["Dir/x".into(), "dir/x".into()]),
                    Clash::Case(vec!["README".into(), "ReadMe".into(), "readme".into()]),
                ],
            ),
            // Final sigma folds like sigma; the Kelvin sign like k.
            (
                vec!["\u{3a3}\u{391}\u{3a3}", "\u{3c3}\u{3b1}\u{3c2}"],
                vec![Clash::Case(vec![
                    "\u{3a3}\u{391}\u{3a3}".into(),
                    "\u{3c3}\u{3b1}\u{3c2}".into(),
                ])],
            ),
            (
                vec!["\u{212a}", "k"],
                vec![Clash::Case(vec!["k".into(), "\u{212a}".into()])],
            ),
        ];
        for (paths, want) in table {
            assert_eq!(clashes(paths.iter().copied()), want, "{paths:?}");
        }
    }

    #[test]
    fn clashes_scale_to_many_paths_with_one_clash() {
        let mut paths: Vec<String> = (0..100_000).map(|i| format!("d{}/f{i}", i % 100)).collect();
        paths.push("D7/f7".into());
        let found = clashes(paths.iter().map(String::as_str));
        assert_eq!(
            found,
            vec![Clash::Case(vec!["D7/f7".into(), "d7/f7".into()])]
        );
    }

    #[test]
    fn symlink_targets_table() {
        // (link, target, Ok(normalised) or Err(part of the reason))
        let table: &[(&str, &str, Result<&str, &str>)] = &[
            ("a/b", "../c", Ok("../c")),
            ("a/b", "../../c", Err("outside")),
            ("a/b", "/etc/passwd", Err("absolute")),
            ("l", "target", Ok("target")),
            ("l", "..", Err("outside")),
            ("l", "../root/x", Err("outside")),
            ("l", ".", Err("folder root")),
            ("a/l", "..", Err("folder root")),
            ("a/l", ".", Ok("../a")),
            ("l", ".ssp/index", Err("metadata")),
            ("l", ".SSP", Err("metadata")),
            ("a/l", "../.ssp", Err("metadata")),
            ("a/l", "../.sspx", Ok("../.sspx")),
            ("l", "", Err("empty")),
            ("l", "a\0b", Err("NUL")),
            ("l", "a\\..\\..\\x", Err("backslash")),
            ("a/b/l", "./x/../y//z/", Ok("y/z")),
            ("a/b/l", "../../a/b/c", Ok("c")),
            ("a/b/l", "../../a/x", Ok("../x")),
            ("a/b/l", "../../../a", Err("outside")),
            // Climbing out and back in through a made-up name still leaves the folder.
            ("l", "../x/../l2", Err("outside")),
        ];
        for (link, target, want) in table {
            let got = symlink_target_inside(link, target);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{link} -> {target:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{link} -> {target:?}: {g}"),
                _ => panic!("{link} -> {target:?}: expected {want:?}, got {got:?}"),
            }
        }
        let long = "a/".repeat(2048);
        assert_eq!(
            symlink_target_inside("l", &long),
            Err("symlink target too long")
        );
        assert!(symlink_target_inside("l", &long[..4094]).is_ok());
    }

    /// Resolves `target` from the folder of `link` lexically, as the kernel would if no
    /// component were a symlink; `None` if it climbs above the root.
    fn resolve(link: &str, target: &str) -> Option<Vec<String>> {
        let mut parts: Vec<String> = link.split('/').map(str::to_owned).collect();
        parts.pop();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                n => parts.push(n.to_owned()),
            }
        }
        Some(parts)
    }

    proptest! {
        /// The normalised target names the same place as the original, stays inside, and is
        /// itself accepted unchanged.
        #[test]
        fn normalised_targets_resolve_to_the_same_place(
            link in proptest::collection::vec("[ab]", 1..5),
            target in proptest::collection::vec(prop_oneof!["\\.\\.", "\\.", "[abc]", Just(String::new())], 1..8),
        ) {
            let link = link.join("/");
            let target = target.join("/");
            if let Ok(norm) = symlink_target_inside(&link, &target) {
                let place = resolve(&link, &target).expect("accepted, so inside");
                prop_assert!(!place.is_empty());
                prop_assert_eq!(resolve(&link, &norm), Some(place));
                prop_assert_eq!(symlink_target_inside(&link, &norm), Ok(norm.clone()));
            } else if !target.is_empty() && !target.starts_with('/') {
                let place = resolve(&link, &target);
                prop_assert!(place.map_or(true, |p| p.is_empty()), "{} -> {} refused", link, target);
            }
        }

        /// NFC is idempotent, and NFC and NFD spellings of one name always clash.
        #[test]
        fn nfc_nfd_spellings_clash(name in "[a-zA-Z\u{e0}-\u{ff}\u{1e00}-\u{1eff}]{1,8}") {
            let nfc = to_wire(&name).into_owned();
            let again = to_wire(&nfc);
            prop_assert_eq!(again.as_ref(), nfc.as_str());
            let nfd: String = name.nfd().collect();
            let found = clashes([nfc.as_str(), nfd.as_str()]);
            if nfc == nfd {
                prop_assert!(found.is_empty());
            } else {
                prop_assert_eq!(found.len(), 1);
                prop_assert!(matches!(found[0], Clash::Normalization(_)));
            }
        }
    }
}
