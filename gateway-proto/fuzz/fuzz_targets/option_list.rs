//! Option strings and push option lists: splitting never panics, and a list that can be
//! written out parses back to the same directives.
#![no_main]

use gateway_proto::key_method::{Directive, emit_option_list, parse_option_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(directive)) = Directive::parse(text) {
        if let Ok(written) = directive.to_text() {
            assert_eq!(Directive::parse(&written), Ok(Some(directive)));
        }
    }
    let Ok(list) = parse_option_list(text) else {
        return;
    };
    if let Ok(written) = emit_option_list(&list) {
        assert_eq!(parse_option_list(&written), Ok(list), "parse(emit(l)) == l");
    }
});
