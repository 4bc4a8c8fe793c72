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

/// Toll vehicle classes (JT/T 489-2019) with their zh-CN names, as the card's issue file and an
/// OBU's vehicle file store them.
pub const VEHICLE_CLASSES: &[(u8, &str)] = &[
    (1, "一型客车"),
    (2, "二型客车"),
    (3, "三型客车"),
    (4, "四型客车"),
    (11, "一型货车"),
    (12, "二型货车"),
    (13, "三型货车"),
    (14, "四型货车"),
    (15, "五型货车"),
    (16, "六型货车"),
    (21, "一型专项作业车"),
    (22, "二型专项作业车"),
    (23, "三型专项作业车"),
    (24, "四型专项作业车"),
    (25, "五型专项作业车"),
    (26, "六型专项作业车"),
];

/// The zh-CN name of a vehicle class, `None` when the code is not a toll class.
pub fn vehicle_class_zh(code: u8) -> Option<&'static str> {
    VEHICLE_CLASSES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// 车辆用户类型 codes with their zh-CN names, as ETC cards and OBU vehicle files store them.
pub const VEHICLE_USER_TYPES: &[(u8, &str)] = &[
    (0, "普通车辆"),
    (6, "公务车辆"),
    (8, "军警车辆"),
    (10, "紧急车辆"),
    (12, "免费车辆"),
    (14, "车队车辆"),
];

/// The zh-CN name of a 车辆用户类型, `None` when the code is not a known one.
pub fn vehicle_user_type_zh(code: u8) -> Option<&'static str> {
    VEHICLE_USER_TYPES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
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
