//! The one form group names and tags are stored and compared in, so that names which look the same are
//! the same name: Unicode NFKC (full-width letters, ligatures and compatibility spaces become their plain
//! forms), then every run of whitespace one ASCII space, trimmed. The database's `normal_text` function
//! (migration `20261206000001_normal_names.sql`) computes the same form for its unique index on names.

use unicode_normalization::UnicodeNormalization;

/// `value` in normal form.
pub fn normal_form(value: &str) -> String {
    fold_whitespace(&compose(value))
}

/// NFKC alone: characters that are refused (controls, invisible ones) are still there to be named.
pub(super) fn compose(value: &str) -> String {
    value.nfkc().collect()
}

/// Each run of whitespace (Unicode's White_Space, as `char::is_whitespace`) one space; trimmed.
pub(super) fn fold_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_have_one_normal_form() {
        let plain = "Team A";
        for look_alike in [
            "Team\u{00A0}A",   // no-break space
            "Team\u{2002}A",   // en space
            "Team\u{3000}A",   // ideographic space
            "Team\u{202F}A",   // narrow no-break space
            "Team  A",         // two spaces
            " Team A\u{00A0}", // surrounding spaces
            "Ｔｅａｍ Ａ",     // full-width letters
        ] {
            assert_eq!(normal_form(look_alike), plain, "{look_alike:?}");
        }
        assert_eq!(
            normal_form("ﬁeld team"),
            "field team",
            "ligatures are split"
        );
        assert_eq!(normal_form("Cafe\u{301}"), "Café", "composed");
        assert_eq!(normal_form("Café"), "Café");
    }

    #[test]
    fn the_normal_form_is_stable() {
        for value in [
            "Team\u{00A0}A",
            "Ｔｅａｍ",
            "a \u{2028} b",
            "ﬃ",
            "Ⅻ",
            "①",
            "Café",
        ] {
            let once = normal_form(value);
            assert_eq!(normal_form(&once), once, "{value:?}");
        }
    }

    #[test]
    fn case_and_distinct_letters_are_kept() {
        // Case is compared by the database (names are unique ignoring case), not folded here.
        assert_eq!(normal_form("TEAM a"), "TEAM a");
        assert_ne!(
            normal_form("Team A"),
            normal_form("Team Β"),
            "Latin B and Greek Beta differ"
        );
    }
}
