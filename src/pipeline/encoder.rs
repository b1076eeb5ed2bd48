//! The H.264 encoder's settings for a recording.
//!
//! x264's speed preset follows the pixel rate: up to 1280x720 at 30 fps it is `veryfast`, the
//! original recorder's preset (the same quality at the same bitrate); above that `superfast`, which
//! costs about 40% less CPU for 0.001-0.01 less SSIM, because 1080p30 leaves no core to spare on
//! the 2-core machines recordings are sized for. Among x264's presets neither can be beaten: no
//! single option added to `superfast` reaches `veryfast`'s SSIM for less CPU (README, Benchmarks).
//! `LIVEKIT_RECORDER_X264_PRESET` pins one preset for every recording.

use crate::options::Options;

/// The environment variable that pins the speed preset (`auto` or one of [`PRESETS`]).
pub const PRESET_ENV: &str = "LIVEKIT_RECORDER_X264_PRESET";
/// x264's speed presets, fastest first.
pub const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];
/// Pixels per second up to which the preset is `veryfast`: 1280x720 at 30 fps.
const VERYFAST_MAX_PIXEL_RATE: u64 = 1280 * 720 * 30;

/// The preset chosen for a frame size and rate when none is pinned.
pub fn default_preset(width: u32, height: u32, framerate: u32) -> &'static str {
    let rate = (u64::from(width) * u64::from(height)).saturating_mul(u64::from(framerate));
    if rate <= VERYFAST_MAX_PIXEL_RATE {
        "veryfast"
    } else {
        "superfast"
    }
}

/// The preset for `o`, given the value of [`PRESET_ENV`] (unset, empty or `auto`: the default; a
/// value that is not a preset is warned about and the default used).
pub fn preset(o: &Options, pinned: Option<&str>) -> &'static str {
    let default = default_preset(o.width, o.height, o.framerate);
    match pinned.map(str::trim) {
        None | Some("") | Some("auto") => default,
        Some(v) => PRESETS
            .iter()
            .copied()
            .find(|p| p.eq_ignore_ascii_case(v))
            .unwrap_or_else(|| {
                tracing::warn!(value = %v, "{PRESET_ENV} is not auto or an x264 preset; using {default}");
                default
            }),
    }
}

/// x264enc's properties for `o`, in the order they are set, as gst-launch would write them.
pub fn x264_properties(o: &Options, pinned: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        ("bitrate", o.video_bitrate.to_string()),
        ("speed-preset", preset(o, pinned).to_string()),
        // No frame held back: B-frames and lookahead cost memory and latency and, measured, gain
        // less SSIM than their CPU buys with a slower preset.
        ("tune", "zerolatency".to_string()),
        // A keyframe at least every 2 s: seekable files, quick joins for RTMP viewers.
        ("key-int-max", (o.framerate * 2).to_string()),
    ]
}

/// `x264enc name=value ...`: the settings as one line, for the log and the bench.
pub fn describe(properties: &[(&str, String)]) -> String {
    let mut line = String::from("x264enc");
    for (name, value) in properties {
        line.push_str(&format!(" {name}={value}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(width: u32, height: u32, framerate: u32) -> Options {
        Options {
            width,
            height,
            framerate,
            ..Options::default()
        }
    }

    #[test]
    fn the_preset_follows_the_pixel_rate() {
        assert_eq!(default_preset(1280, 720, 30), "veryfast");
        assert_eq!(default_preset(1280, 720, 25), "veryfast");
        assert_eq!(default_preset(854, 480, 60), "veryfast");
        assert_eq!(default_preset(1280, 720, 60), "superfast");
        assert_eq!(default_preset(1920, 1080, 30), "superfast");
        assert_eq!(default_preset(1281, 720, 30), "superfast");
        // No overflow at the largest sizes the options allow.
        assert_eq!(default_preset(u32::MAX, u32::MAX, u32::MAX), "superfast");
    }

    #[test]
    fn a_pinned_preset_wins_and_a_bad_one_is_ignored() {
        let hd = sized(1280, 720, 30);
        let fhd = sized(1920, 1080, 30);
        assert_eq!(preset(&hd, None), "veryfast");
        assert_eq!(preset(&fhd, Some("auto")), "superfast");
        assert_eq!(preset(&fhd, Some(" ")), "superfast");
        assert_eq!(preset(&fhd, Some("VeryFast")), "veryfast");
        assert_eq!(preset(&hd, Some("ultrafast")), "ultrafast");
        assert_eq!(preset(&hd, Some("quick")), "veryfast");
        assert_eq!(preset(&fhd, Some("superfast; rm")), "superfast");
    }

    #[test]
    fn the_properties_read_as_a_gst_launch_line() {
        let o = Options {
            video_bitrate: 3000,
            ..sized(1280, 720, 30)
        };
        assert_eq!(
            describe(&x264_properties(&o, None)),
            "x264enc bitrate=3000 speed-preset=veryfast tune=zerolatency key-int-max=60"
        );
        let o = Options {
            video_bitrate: 4500,
            ..sized(1920, 1080, 30)
        };
        assert_eq!(
            describe(&x264_properties(&o, Some("faster"))),
            "x264enc bitrate=4500 speed-preset=faster tune=zerolatency key-int-max=60"
        );
    }
}
