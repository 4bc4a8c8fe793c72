//! Business vocabulary shared by the daemon and its clients.

/// Standard plate colours (GB/T 38444 codes as ETC cards store them) with their zh-CN names.
pub const PLATE_COLOURS: &[(u16, &str)] = &[
    (0, "蓝色"),
    (1, "黄色"),
    (2, "黑色"),
    (3, "白色"),
    (4, "渐变绿色"),
    (5, "黄绿双拼色"),
    (6, "蓝白渐变色"),
    (11, "绿色"),
    (12, "红色"),
];

/// The zh-CN name of a plate colour code, `其他` when unknown.
pub fn plate_colour_zh(code: u16) -> &'static str {
    PLATE_COLOURS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
        .unwrap_or("其他")
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours_have_names() {
        assert_eq!(super::plate_colour_zh(0), "蓝色");
        assert_eq!(super::plate_colour_zh(4), "渐变绿色");
        assert_eq!(super::plate_colour_zh(99), "其他");
    }
}
