//! pcap capture of a port's traffic, written with the `pcap-file` crate (classic pcap,
//! `LINKTYPE_ETHERNET`, microsecond timestamps: the format every version of tcpdump, tshark and
//! Wireshark opens).

use std::fmt;
use std::io::Write;
use std::time::{Duration, SystemTime};

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};

/// Largest number of bytes kept per frame (the pcap header's snaplen); longer frames are
/// truncated in the file with their original length recorded.
pub const SNAPLEN: u32 = 65535;

/// Which of a port's frames a capture records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDirection {
    /// Frames the port hands to the bridge (before validation, so dropped ones too).
    Rx,
    /// Frames the bridge queues for the port.
    Tx,
    /// Both.
    Both,
}

impl CaptureDirection {
    pub(crate) fn rx(self) -> bool {
        matches!(self, CaptureDirection::Rx | CaptureDirection::Both)
    }
    pub(crate) fn tx(self) -> bool {
        matches!(self, CaptureDirection::Tx | CaptureDirection::Both)
    }
}

/// What a finished capture wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Frames written to the file.
    pub frames: u64,
}

/// A running capture.
pub(crate) struct Capture {
    writer: PcapWriter<Box<dyn Write + Send>>,
    pub(crate) dir: CaptureDirection,
    /// Wall-clock time minus the caller's `now`, fixed at the first frame so the file's
    /// timestamps follow the caller's clock but read as real dates.
    wall_offset: Option<Duration>,
    frames: u64,
    error: Option<pcap_file::PcapError>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("dir", &self.dir)
            .field("frames", &self.frames)
            .field("failed", &self.error.is_some())
            .finish()
    }
}

impl Capture {
    pub(crate) fn new(
        writer: Box<dyn Write + Send>,
        dir: CaptureDirection,
    ) -> Result<Self, pcap_file::PcapError> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ..PcapHeader::default()
        };
        Ok(Self {
            writer: PcapWriter::with_header(writer, header)?,
            dir,
            wall_offset: None,
            frames: 0,
            error: None,
        })
    }

    /// Records one frame seen at the caller's time `now`. After the first write error the
    /// capture records nothing more; forwarding is never affected.
    pub(crate) fn record(&mut self, now: Duration, data: &[u8], frame_len: usize) {
        if self.error.is_some() {
            return;
        }
        let offset = *self.wall_offset.get_or_insert_with(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(now)
        });
        let kept = data.len().min(SNAPLEN as usize);
        let orig_len = u32::try_from(frame_len.max(data.len())).unwrap_or(u32::MAX);
        let pkt = PcapPacket::new(now + offset, orig_len, &data[..kept]);
        match self.writer.write_packet(&pkt) {
            Ok(_) => self.frames += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Flushes the file and reports what was written, or the first error.
    pub(crate) fn finish(self) -> Result<CaptureSummary, pcap_file::PcapError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let frames = self.frames;
        self.writer
            .into_writer()
            .flush()
            .map_err(pcap_file::PcapError::IoError)?;
        Ok(CaptureSummary { frames })
    }
}
