//! Captures panic messages raised inside a simulated run (a violated assertion in the engine),
//! so the run reports them as a failure of that seed instead of printing them mid-campaign.

use std::cell::{Cell, RefCell};
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = match info.payload().downcast_ref::<&str>() {
                Some(text) => text.to_string(),
                None => info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".into()),
            };
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            // The first panic is the cause; later ones (tokio shutting the LocalSet down because
            // of it) are consequences.
            LAST_PANIC.with(|last| {
                let mut last = last.borrow_mut();
                if last.is_none() {
                    *last = Some(format!("{message}{location}"));
                }
            });
            if QUIET.with(|quiet| quiet.get()) == 0 {
                default(info);
            }
        }));
    });
}

/// While alive, panics on this thread are recorded instead of printed.
pub struct QuietPanics;

impl QuietPanics {
    pub fn enter() -> QuietPanics {
        install();
        LAST_PANIC.with(|last| *last.borrow_mut() = None);
        QUIET.with(|quiet| quiet.set(quiet.get() + 1));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET.with(|quiet| quiet.set(quiet.get() - 1));
    }
}

/// The message of the first panic on this thread since the run began, if any.
pub fn take() -> Option<String> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}
