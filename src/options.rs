//! Recording options after presets and defaults are applied: what a session records at.

use crate::proto::livekit::{RecordingOptions, RecordingPreset};

/// H.264 profile of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Baseline,
    Main,
    High,
}

impl Profile {
    /// `baseline`, `main` or `high`, as the original accepted them (exact, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "baseline" => Some(Self::Baseline),
            "main" => Some(Self::Main),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Main => "main",
            Self::High => "high",
        }
    }
}

/// Everything a recording is encoded with. Bitrates in kbps, frequency in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub width: u32,
    pub height: u32,
    pub depth: u32,
    pub framerate: u32,
    pub audio_bitrate: u32,
    pub audio_frequency: u32,
    pub video_bitrate: u32,
    pub profile: Profile,
}

impl Default for Options {
    /// The original's built-in defaults: 1920x1080x24 at 30 fps, 4500 kbps, AAC 128 kbps 44.1 kHz.
    fn default() -> Self {
        Self {
            width: 1920,
            height: 1080,
            depth: 24,
            framerate: 30,
            audio_bitrate: 128,
            audio_frequency: 44100,
            video_bitrate: 4500,
            profile: Profile::Main,
        }
    }
}

impl Options {
    /// A preset's options (all presets: depth 24, AAC 128 kbps at 44.1 kHz, profile main).
    /// `NONE` gives the built-in defaults.
    pub fn from_preset(preset: RecordingPreset) -> Self {
        let (width, height, framerate, video_bitrate) = match preset {
            RecordingPreset::None | RecordingPreset::FullHd30 => (1920, 1080, 30, 4500),
            RecordingPreset::Hd30 => (1280, 720, 30, 3000),
            RecordingPreset::Hd60 => (1280, 720, 60, 4500),
            RecordingPreset::FullHd60 => (1920, 1080, 60, 6000),
        };
        Self {
            width,
            height,
            framerate,
            video_bitrate,
            ..Self::default()
        }
    }

    /// Merges a request's options over these defaults, exactly as the original did:
    /// a preset replaces everything; otherwise width and height are taken together, each other
    /// number when zero, and the profile when it is not one of baseline/main/high.
    pub fn merge(&self, request: Option<&RecordingOptions>) -> Self {
        let Some(r) = request else {
            return *self;
        };
        let preset = RecordingPreset::try_from(r.preset).unwrap_or(RecordingPreset::None);
        if preset != RecordingPreset::None {
            return Self::from_preset(preset);
        }
        let pick =
            |v: i32, default: u32| u32::try_from(v).ok().filter(|v| *v > 0).unwrap_or(default);
        let (width, height) = if r.width == 0 || r.height == 0 {
            (self.width, self.height)
        } else {
            // Negative sizes are caught by `check`, with a message naming them.
            (r.width as u32, r.height as u32)
        };
        Self {
            width,
            height,
            depth: pick(r.depth, self.depth),
            framerate: pick(r.framerate, self.framerate),
            audio_bitrate: pick(r.audio_bitrate, self.audio_bitrate),
            audio_frequency: pick(r.audio_frequency, self.audio_frequency),
            video_bitrate: pick(r.video_bitrate, self.video_bitrate),
            profile: Profile::parse(&r.profile).unwrap_or(self.profile),
        }
    }

    /// Checks that the options can be recorded; the error says which value is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !(16..=7680).contains(&self.width) || !(16..=4320).contains(&self.height) {
            return Err(format!(
                "size {}x{} out of range (16x16 to 7680x4320)",
                self.width, self.height
            ));
        }
        if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
            return Err(format!(
                "width and height must be even for H.264, got {}x{}",
                self.width, self.height
            ));
        }
        if ![16, 24, 30, 32].contains(&self.depth) {
            return Err(format!("depth {} is not one of 16, 24, 30, 32", self.depth));
        }
        if !(1..=120).contains(&self.framerate) {
            return Err(format!("framerate {} out of range 1-120", self.framerate));
        }
        if !(8..=512).contains(&self.audio_bitrate) {
            return Err(format!(
                "audio_bitrate {} kbps out of range 8-512",
                self.audio_bitrate
            ));
        }
        if ![8000, 16000, 22050, 24000, 32000, 44100, 48000].contains(&self.audio_frequency) {
            return Err(format!(
                "audio_frequency {} Hz is not one of 8000, 16000, 22050, 24000, 32000, 44100, 48000",
                self.audio_frequency
            ));
        }
        if !(100..=100_000).contains(&self.video_bitrate) {
            return Err(format!(
                "video_bitrate {} kbps out of range 100-100000",
                self.video_bitrate
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut RecordingOptions)) -> RecordingOptions {
        let mut r = RecordingOptions::default();
        f(&mut r);
        r
    }

    #[test]
    fn presets_match_the_table() {
        let p = Options::from_preset;
        assert_eq!(
            (
                p(RecordingPreset::Hd30).width,
                p(RecordingPreset::Hd30).height
            ),
            (1280, 720)
        );
        assert_eq!(p(RecordingPreset::Hd30).video_bitrate, 3000);
        assert_eq!(p(RecordingPreset::Hd60).framerate, 60);
        assert_eq!(p(RecordingPreset::Hd60).video_bitrate, 4500);
        assert_eq!(p(RecordingPreset::FullHd30), Options::default());
        assert_eq!(p(RecordingPreset::FullHd60).video_bitrate, 6000);
        for preset in [
            RecordingPreset::Hd30,
            RecordingPreset::Hd60,
            RecordingPreset::FullHd30,
            RecordingPreset::FullHd60,
        ] {
            let o = p(preset);
            assert_eq!(
                (o.depth, o.audio_bitrate, o.audio_frequency, o.profile),
                (24, 128, 44100, Profile::Main)
            );
        }
    }

    #[test]
    fn no_options_take_the_defaults() {
        let d = Options::from_preset(RecordingPreset::Hd60);
        assert_eq!(d.merge(None), d);
        assert_eq!(d.merge(Some(&RecordingOptions::default())), d);
    }

    #[test]
    fn a_request_preset_replaces_everything() {
        let d = Options::default();
        let r = req(|r| {
            r.preset = RecordingPreset::Hd30 as i32;
            r.width = 640;
            r.height = 480;
            r.video_bitrate = 1;
            r.profile = "high".into();
        });
        assert_eq!(
            d.merge(Some(&r)),
            Options::from_preset(RecordingPreset::Hd30)
        );
    }

    #[test]
    fn width_and_height_go_together() {
        let d = Options::default();
        let only_width = d.merge(Some(&req(|r| r.width = 1280)));
        assert_eq!((only_width.width, only_width.height), (1920, 1080));
        let both = d.merge(Some(&req(|r| {
            r.width = 1280;
            r.height = 720;
        })));
        assert_eq!((both.width, both.height), (1280, 720));
    }

    #[test]
    fn each_zero_field_takes_its_default() {
        let d = Options {
            profile: Profile::High,
            ..Options::default()
        };
        let m = d.merge(Some(&req(|r| {
            r.framerate = 25;
            r.video_bitrate = 2048;
            r.profile = "unknown".into();
        })));
        assert_eq!(m.framerate, 25);
        assert_eq!(m.video_bitrate, 2048);
        assert_eq!(m.depth, 24);
        assert_eq!(m.audio_bitrate, 128);
        assert_eq!(m.audio_frequency, 44100);
        assert_eq!(
            m.profile,
            Profile::High,
            "invalid profile keeps the default"
        );
        let m = d.merge(Some(&req(|r| r.profile = "baseline".into())));
        assert_eq!(m.profile, Profile::Baseline);
    }

    #[test]
    fn check_names_the_bad_value() {
        assert!(Options::default().check().is_ok());
        let bad = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.check().unwrap_err()
        };
        assert!(bad(|o| o.width = 1281).contains("even"));
        assert!(bad(|o| o.width = 0).contains("out of range"));
        assert!(bad(|o| o.depth = 8).contains("depth 8"));
        assert!(bad(|o| o.framerate = 500).contains("framerate 500"));
        assert!(bad(|o| o.audio_frequency = 12345).contains("audio_frequency 12345"));
        assert!(bad(|o| o.video_bitrate = 1).contains("video_bitrate 1"));
        assert!(bad(|o| o.audio_bitrate = 4).contains("audio_bitrate 4"));
    }
}
