//! Wall-clock timing that works natively and in a browser (where `std::time::Instant` panics).
//!
//! May use: nothing of the crate.

/// Milliseconds since an arbitrary origin.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// Milliseconds since the page or worker started (`performance.now()`).
#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    use wasm_bindgen::JsCast;
    let global = js_sys::global();
    let perf = js_sys::Reflect::get(&global, &"performance".into()).ok();
    match perf.and_then(|p| p.dyn_into::<web_sys::Performance>().ok()) {
        Some(p) => p.now(),
        None => js_sys::Date::now(),
    }
}

/// Measures the seconds since it was started.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(f64);

impl Stopwatch {
    pub fn start() -> Self {
        Self(now_ms())
    }
    pub fn seconds(&self) -> f64 {
        (now_ms() - self.0) / 1e3
    }
}
