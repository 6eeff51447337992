//! Encap and decap on a packet buffer (mbuf or `TestBuffer`).

use netbuf::PacketBuffer;

use super::{DATA_V2_OVERHEAD, DataChannel, DataDrop};

/// Seals the packet in `buf` (an inner IP packet, or any plaintext) into
/// a `P_DATA_V2` packet: the header, packet id and tag are prepended into
/// the headroom and the payload is encrypted where it lies.
///
/// # Errors
/// [`DataDrop::NoHeadroom`] (fewer than [`DATA_V2_OVERHEAD`] bytes of
/// headroom), [`DataDrop::PacketIdExhausted`]. The buffer and the channel
/// are unchanged then.
pub fn encap<B: PacketBuffer>(ch: &mut DataChannel, buf: &mut B) -> Result<(), DataDrop> {
    if !ch.can_seal() {
        return Err(DataDrop::PacketIdExhausted);
    }
    if buf.prepend(DATA_V2_OVERHEAD).is_err() {
        return Err(DataDrop::NoHeadroom);
    }
    if let Err(e) = ch.seal_in_place(buf.as_mut()) {
        // Undo the prepend: the buffer is what the caller gave.
        let _ = buf.trim_from_start(DATA_V2_OVERHEAD);
        return Err(e);
    }
    Ok(())
}

/// Opens the `P_DATA_V2` (or `P_DATA_V1`) packet that `buf` holds (from
/// its first byte: the UDP payload) and trims the header, packet id and
/// tag: `buf` is then the plaintext (classify it with
/// [`super::classify`]).
///
/// # Errors
/// The [`DataDrop`] reason: the buffer is then to be dropped (its bytes
/// are undefined after a failed tag), the channel is unchanged.
pub fn decap<B: PacketBuffer>(ch: &mut DataChannel, buf: &mut B) -> Result<(), DataDrop> {
    let range = ch.open_in_place(buf.as_mut())?;
    buf.trim_from_start(range.start)
        .map_err(|_| DataDrop::TooShort)
}
