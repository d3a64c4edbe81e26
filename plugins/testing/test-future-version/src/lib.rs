//! An alert rule built against a future contract version (0.3.0) without the
//! SDK, to test that the host refuses it by name and version.

wit_bindgen::generate!({
    inline: "
        package switchyard:plugins@0.3.0;
        interface alert {
            evaluate: func() -> u32;
        }
        world alert-rule {
            export alert;
        }
    ",
    world: "alert-rule",
});

struct Future;

impl exports::switchyard::plugins::alert::Guest for Future {
    fn evaluate() -> u32 {
        2
    }
}

export!(Future);
