//! `.pth` / `.pt` files as `torch.save` writes them (PyTorch ≥ 1.6): a zip archive (stored, not
//! compressed) holding `NAME/data.pkl`, a pickle of the saved object whose tensors point at
//! storages `NAME/data/KEY`. Read from memory (the page has no files).
//!
//! The pickle is read as data by Candle's restricted reader ([`candle_core::pickle::Stack`]):
//! nothing in it is imported or called. That reader trusts its input (a length prefix is
//! allocated before it is read, a memo entry is cloned on every reference, nesting is not
//! bounded), so every opcode is first checked here by a dry run over the same stack discipline
//! that tracks each object's size and depth: lengths must lie within the bytes, clones may not
//! exceed a budget proportional to the pickle's size, nesting stays shallow. Only then does
//! Candle build the objects. Storages are then located in the archive and every tensor's view
//! checked to lie inside its storage (see [`RawTensor::new`]).

use std::collections::HashMap;
use std::io::Cursor;

use candle_core::pickle::{Object, Stack};

use crate::tensors::{RawDtype, RawTensor};
use crate::weights::WeightsError;

fn format_error(msg: impl std::fmt::Display) -> WeightsError {
    WeightsError::Format(format!("not a valid PyTorch .pth file: {msg}"))
}

/// Where the state dict may sit in a checkpoint dict, tried in this order.
pub const CHECKPOINT_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];

/// The tensors of a `torch.save` file: a state dict, or a checkpoint dict holding one under one
/// of [`CHECKPOINT_KEYS`]. Entries that are not tensors (`_metadata`, an epoch) are skipped.
pub fn tensors(bytes: &[u8]) -> Result<Vec<RawTensor<'_>>, WeightsError> {
    let entries = Entries::read(bytes)?;
    let (pkl_name, pkl) = entries.pickle()?;
    let dir = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_string();
    if let Some(order) = entries.get(&format!("{dir}byteorder")) {
        if order != b"little" {
            return Err(format_error(format!(
                "byte order '{}' (only little-endian files are read)",
                String::from_utf8_lossy(order)
            )));
        }
    }
    check_pickle(pkl)?;
    let mut stack = Stack::empty();
    // Candle's error carries a backtrace where RUST_BACKTRACE is set: the message is its first line.
    let candle = |e: candle_core::Error| {
        format_error(format!("pickle: {}", e.to_string().lines().next().unwrap_or("")))
    };
    stack.read_loop(&mut &pkl[..]).map_err(candle)?;
    let obj = stack.finalize().map_err(candle)?;
    let dict = state_dict(obj)?;
    let mut out = Vec::with_capacity(dict.len());
    let mut seen = std::collections::HashSet::new();
    for (key, value) in dict {
        let Object::Unicode(name) = key else { continue };
        let Some(info) = tensor_info(&name, value)? else { continue };
        if !seen.insert(name.clone()) {
            return Err(format_error(format!("tensor {name} appears twice")));
        }
        let path = format!("{dir}data/{}", info.key);
        let storage = entries.get(&path).ok_or_else(|| {
            format_error(format!("tensor {name}: its storage {path} is not in the archive"))
        })?;
        let size = info.dtype_size;
        let claimed =
            info.storage_elements.checked_mul(size).filter(|&n| n <= storage.len()).ok_or_else(|| {
                format_error(format!(
                    "tensor {name}: its storage claims {} elements, the archive holds {} bytes (truncated?)",
                    info.storage_elements,
                    storage.len()
                ))
            })?;
        out.push(RawTensor::new(
            name,
            info.shape,
            info.dtype,
            &storage[..claimed],
            info.offset,
            info.strides,
        )?);
    }
    Ok(out)
}

/// The archive's entries by name, each as the slice of the file that holds it.
struct Entries<'a> {
    by_name: HashMap<String, &'a [u8]>,
    names: Vec<String>,
}

impl<'a> Entries<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
            format_error(format!("the zip archive cannot be read ({e}); is the file complete?"))
        })?;
        let mut by_name = HashMap::new();
        let mut names = vec![];
        for i in 0..zip.len() {
            let file = zip.by_index_raw(i).map_err(|e| format_error(format!("zip entry {i}: {e}")))?;
            let name = file.name().map_err(|e| format_error(format!("zip entry {i}: {e}")))?.to_string();
            if file.compression() != zip::CompressionMethod::Stored {
                return Err(format_error(format!(
                    "entry {name} is compressed ({}); torch.save stores entries uncompressed",
                    file.compression()
                )));
            }
            let start = file.data_start().ok_or_else(|| format_error(format!("entry {name}: no data")))?;
            let (start, len) = (start as usize, file.compressed_size() as usize);
            if file.size() != file.compressed_size()
                || start.checked_add(len).is_none_or(|end| end > bytes.len())
            {
                return Err(format_error(format!(
                    "entry {name} reaches beyond the end of the file (truncated?)"
                )));
            }
            names.push(name.clone());
            by_name.insert(name, &bytes[start..start + len]);
        }
        Ok(Entries { by_name, names })
    }

    fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.by_name.get(name).copied()
    }

    /// The one `data.pkl` at the archive's top folder.
    fn pickle(&self) -> Result<(&str, &'a [u8]), WeightsError> {
        let mut pkls = self.names.iter().filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1);
        match (pkls.next(), pkls.next()) {
            (Some(name), None) => Ok((name, self.by_name[name])),
            (None, _) if self.names.iter().any(|n| n.ends_with("constants.pkl")) => Err(format_error(
                "a TorchScript archive (torch.jit.save); save the model's state_dict() with torch.save",
            )),
            (None, _) => Err(format_error("the zip archive holds no data.pkl (not written by torch.save)")),
            (Some(_), Some(_)) => Err(format_error("the zip archive holds more than one data.pkl")),
        }
    }
}

/// A tensor's place in its storage, from the `torch._utils._rebuild_tensor_v2` call the pickle
/// describes.
struct TensorInfo {
    key: String,
    dtype: RawDtype,
    dtype_size: usize,
    storage_elements: usize,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

fn class_is(obj: &Object, module: &str, class: &str) -> bool {
    matches!(obj, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

/// `Some` for a tensor (or nn.Parameter), `None` for any other value; an error for a tensor
/// whose description is malformed.
fn tensor_info(name: &str, value: Object) -> Result<Option<TensorInfo>, WeightsError> {
    let Object::Reduce { callable, args } = value else { return Ok(None) };
    let Object::Tuple(mut args) = *args else { return Ok(None) };
    if class_is(&callable, "torch._utils", "_rebuild_parameter") && !args.is_empty() {
        return tensor_info(name, args.swap_remove(0));
    }
    if class_is(&callable, "torch._tensor", "_rebuild_from_type_v2") && args.len() >= 3 {
        let inner = args.swap_remove(2);
        let func = args.swap_remove(0);
        return tensor_info(name, Object::Reduce { callable: Box::new(func), args: Box::new(inner) });
    }
    if !class_is(&callable, "torch._utils", "_rebuild_tensor_v2") {
        return match *callable {
            Object::Class { module_name, class_name } if module_name.starts_with("torch") => Err(
                format_error(format!("tensor {name}: {module_name}.{class_name} tensors are not supported")),
            ),
            _ => Ok(None),
        };
    }
    let bad = |what: &str| format_error(format!("tensor {name}: malformed {what}"));
    if args.len() < 4 {
        return Err(bad("tensor description"));
    }
    let mut args = args.into_iter();
    let (storage, offset, size, stride) = (args.next(), args.next(), args.next(), args.next());
    let Some(Object::PersistentLoad(storage)) = storage else { return Err(bad("storage reference")) };
    let Object::Tuple(storage) = *storage else { return Err(bad("storage reference")) };
    let [kind, class, key, _location, numel] =
        <[Object; 5]>::try_from(storage).map_err(|_| bad("storage reference"))?;
    if kind != Object::Unicode("storage".into()) {
        return Err(bad("storage reference"));
    }
    let Object::Class { class_name, .. } = class else { return Err(bad("storage type")) };
    let dtype = match class_name.as_str() {
        "FloatStorage" => RawDtype::F32,
        "DoubleStorage" => RawDtype::F64,
        "HalfStorage" => RawDtype::F16,
        "BFloat16Storage" => RawDtype::BF16,
        "LongStorage" => RawDtype::I64,
        "IntStorage" => RawDtype::I32,
        other => RawDtype::Other(other.to_string()),
    };
    let dtype_size = match class_name.as_str() {
        "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
        "ShortStorage" => 2,
        _ => match dtype {
            RawDtype::F32 | RawDtype::I32 => 4,
            RawDtype::F64 | RawDtype::I64 => 8,
            RawDtype::F16 | RawDtype::BF16 => 2,
            RawDtype::Other(_) => {
                return Err(format_error(format!("tensor {name}: unsupported storage {class_name}")))
            }
        },
    };
    let Object::Unicode(key) = key else { return Err(bad("storage key")) };
    let count = |o: Option<Object>| -> Option<usize> {
        match o? {
            Object::Int(i) => usize::try_from(i).ok(),
            Object::Long(i) => usize::try_from(i).ok(),
            _ => None,
        }
    };
    let dims = |o: Option<Object>| -> Option<Vec<usize>> {
        match o? {
            Object::Tuple(items) => items.into_iter().map(|i| count(Some(i))).collect(),
            _ => None,
        }
    };
    let storage_elements = count(Some(numel)).ok_or_else(|| bad("storage size"))?;
    let offset = count(offset).ok_or_else(|| bad("offset"))?;
    let shape = dims(size).ok_or_else(|| bad("size"))?;
    let strides = dims(stride).ok_or_else(|| bad("stride"))?;
    Ok(Some(TensorInfo { key, dtype, dtype_size, storage_elements, offset, shape, strides }))
}

/// The state dict in what was saved: the object itself, or a checkpoint's entry.
fn state_dict(obj: Object) -> Result<Vec<(Object, Object)>, WeightsError> {
    let items = match obj {
        Object::Dict(items) => items,
        Object::Build { callable, .. } | Object::Reduce { callable, .. } => {
            let what = match *callable {
                Object::Class { module_name, class_name } => format!("{module_name}.{class_name}"),
                Object::Reduce { callable, .. } => match *callable {
                    Object::Class { module_name, class_name } => format!("{module_name}.{class_name}"),
                    _ => "an object".into(),
                },
                _ => "an object".into(),
            };
            return Err(WeightsError::Format(format!(
                "the file holds a pickled {what}, not a state_dict (torch.save(model)?); save \
                 model.state_dict() instead: torch.save(model.state_dict(), path)"
            )));
        }
        other => {
            return Err(WeightsError::Format(format!(
                "the file holds {}, not a state_dict",
                describe(&other)
            )))
        }
    };
    let is_tensor = |v: &Object| matches!(v, Object::Reduce { callable, .. } if matches!(**callable, Object::Class { ref module_name, .. } if module_name.starts_with("torch")));
    if items.iter().any(|(_, v)| is_tensor(v)) {
        return Ok(items);
    }
    let keys: Vec<String> = items
        .iter()
        .filter_map(|(k, _)| match k {
            Object::Unicode(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let holds_tensors = |k: &Object, v: &Object, want: &str| {
        matches!(k, Object::Unicode(s) if s == want)
            && matches!(v, Object::Dict(inner) if inner.iter().any(|(_, v)| is_tensor(v)))
    };
    if let Some(want) = CHECKPOINT_KEYS.iter().find(|w| items.iter().any(|(k, v)| holds_tensors(k, v, w))) {
        let found = items.into_iter().find(|(k, v)| holds_tensors(k, v, want));
        if let Some((_, Object::Dict(inner))) = found {
            return Ok(inner);
        }
        return Err(WeightsError::Format(format!("the checkpoint's {want} cannot be read")));
    }
    let shown: Vec<&str> = keys.iter().take(12).map(|s| s.as_str()).collect();
    Err(WeightsError::Format(format!(
        "no tensors: the file holds a dict with keys [{}]{}, and none of {} holds a state_dict",
        shown.join(", "),
        if keys.len() > shown.len() { ", …" } else { "" },
        CHECKPOINT_KEYS.join(" / ")
    )))
}

fn describe(obj: &Object) -> &'static str {
    match obj {
        Object::List(_) => "a list",
        Object::Tuple(_) => "a tuple",
        Object::Unicode(_) => "a string",
        Object::Int(_) | Object::Long(_) => "a number",
        Object::Float(_) => "a number",
        Object::None => "None",
        _ => "something else",
    }
}

/// Deepest nesting of objects a pickle may build (a state dict or checkpoint is under 10).
const MAX_DEPTH: u32 = 200;

/// Most bytes the objects of a pickle may take in Candle's reader: 256 per byte of pickle
/// (a state dict's take 30 to 110: each one-byte integer is a 56-byte object, and every memo
/// entry a clone), and never more than 1 GiB (the pickle of a 548 MB VGG-19 takes 1.5 MB).
const MAX_PICKLE_COST: u64 = 1 << 30;

/// The dry run: every opcode of `pkl` checked against the bytes it reads, and the objects
/// Candle's reader would build (clones included) costed, before it builds them. Errors for an
/// opcode Candle does not know, a length beyond the bytes, nesting deeper than [`MAX_DEPTH`] or
/// objects costing more than a budget proportional to the pickle (see [`MAX_PICKLE_COST`]).
/// Returns that cost, in bytes.
pub fn check_pickle(pkl: &[u8]) -> Result<u64, WeightsError> {
    #[derive(Clone, Copy)]
    struct Obj {
        /// Estimated bytes Candle's object takes, children included.
        cost: u64,
        depth: u32,
        mark: bool,
    }
    const NODE: u64 = 64;
    let leaf = |extra: usize| Obj { cost: NODE + extra as u64, depth: 1, mark: false };
    let budget = (256 * pkl.len() as u64 + (1 << 20)).min(MAX_PICKLE_COST);
    let mut spent: u64 = 0;
    let mut stack: Vec<Obj> = vec![];
    let mut memo: HashMap<u32, Obj> = HashMap::new();
    let mut at = 0usize;
    let err = |at: usize, msg: &str| format_error(format!("pickle, byte {at}: {msg}"));
    let take = |at: &mut usize, n: usize| -> Result<&[u8], WeightsError> {
        let s = pkl.get(*at..at.saturating_add(n)).ok_or_else(|| err(*at, "truncated"))?;
        *at += n;
        Ok(s)
    };
    let combine = |parts: &[Obj]| Obj {
        cost: NODE + parts.iter().map(|o| o.cost).sum::<u64>(),
        depth: 1 + parts.iter().map(|o| o.depth).max().unwrap_or(0),
        mark: false,
    };
    loop {
        let op_at = at;
        let op = *take(&mut at, 1)?.first().expect("one byte");
        let pop = |stack: &mut Vec<Obj>| stack.pop().ok_or_else(|| err(op_at, "pop from an empty stack"));
        let pop_mark = |stack: &mut Vec<Obj>| -> Result<Vec<Obj>, WeightsError> {
            let i = stack.iter().rposition(|o| o.mark).ok_or_else(|| err(op_at, "no mark"))?;
            let items = stack.split_off(i + 1);
            stack.pop();
            Ok(items)
        };
        let new = match op {
            0x80 => {
                take(&mut at, 1)?;
                None
            }
            b'c' => {
                let mut len = 0;
                for _ in 0..2 {
                    let nl =
                        pkl[at..].iter().position(|&b| b == b'\n').ok_or_else(|| err(op_at, "truncated"))?;
                    len += nl;
                    at += nl + 1;
                }
                Some(leaf(len))
            }
            b'K' => take(&mut at, 1).map(|_| Some(leaf(0)))?,
            b'M' => take(&mut at, 2).map(|_| Some(leaf(0)))?,
            b'J' => take(&mut at, 4).map(|_| Some(leaf(0)))?,
            b'G' => take(&mut at, 8).map(|_| Some(leaf(0)))?,
            b'X' => {
                let len = u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")) as usize;
                take(&mut at, len)?;
                Some(leaf(len))
            }
            0x8a => {
                let n = take(&mut at, 1)?[0] as usize;
                if n > 8 {
                    return Err(err(op_at, "an integer wider than 64 bits"));
                }
                take(&mut at, n)?;
                Some(leaf(0))
            }
            b'Q' => {
                let o = pop(&mut stack)?;
                Some(combine(&[o]))
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                Some(combine(&items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = vec![];
                for _ in 0..n {
                    items.push(pop(&mut stack)?);
                }
                Some(combine(&items))
            }
            0x88 | 0x89 | b'N' | b')' | b']' | b'}' | b'd' => Some(leaf(0)),
            b'(' => Some(Obj { mark: true, ..leaf(0) }),
            b'a' | b's' | b'e' | b'u' => {
                let items = match op {
                    b'a' => vec![pop(&mut stack)?],
                    b's' => vec![pop(&mut stack)?, pop(&mut stack)?],
                    _ => pop_mark(&mut stack)?,
                };
                let last = stack.last_mut().ok_or_else(|| err(op_at, "no container"))?;
                let merged = combine(&[*last, combine(&items)]);
                *last = Obj { cost: merged.cost, depth: merged.depth, mark: false };
                None
            }
            b'b' | b'R' | 0x81 => {
                let (a, b) = (pop(&mut stack)?, pop(&mut stack)?);
                Some(combine(&[a, b]))
            }
            b'h' | b'j' => {
                let id = match op {
                    b'h' => take(&mut at, 1)?[0] as u32,
                    _ => u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")),
                };
                let o = *memo.get(&id).ok_or_else(|| err(op_at, "a memo entry that was never stored"))?;
                Some(o)
            }
            b'q' | b'r' => {
                let id = match op {
                    b'q' => take(&mut at, 1)?[0] as u32,
                    _ => u32::from_le_bytes(take(&mut at, 4)?.try_into().expect("4 bytes")),
                };
                let o = *stack.last().ok_or_else(|| err(op_at, "memo of an empty stack"))?;
                spent += o.cost;
                memo.insert(id, o);
                None
            }
            b'.' => {
                return match stack.len() {
                    0 => Err(err(op_at, "nothing was built")),
                    _ => Ok(spent),
                }
            }
            other => return Err(err(op_at, &format!("opcode 0x{other:02x} is not read (data only)"))),
        };
        if let Some(o) = new {
            spent += o.cost;
            if o.depth > MAX_DEPTH {
                return Err(err(op_at, "objects nested too deeply"));
            }
            stack.push(o);
        }
        if let Some(o) = stack.last() {
            if o.depth > MAX_DEPTH {
                return Err(err(op_at, "objects nested too deeply"));
            }
        }
        if spent > budget {
            return Err(err(op_at, "the pickle builds far more than its size (a decompression bomb?)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dry_run_refuses_bombs_and_lies() {
        // A string claiming 4 GB in a 10-byte pickle.
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.push(b'.');
        assert!(check_pickle(&p).unwrap_err().to_string().contains("truncated"));
        // Billion laughs: a list memoised, then a tuple of it twice, memoised, 40 times over.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for i in 0..40u8 {
            p.extend([b'h', i, b'h', i, 0x86, b'q', i + 1]);
        }
        p.push(b'.');
        assert!(check_pickle(&p).unwrap_err().to_string().contains("far more"));
        // A million nested one-tuples.
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, 1_000_000));
        p.push(b'.');
        assert!(check_pickle(&p).unwrap_err().to_string().contains("deeply"));
        // A 255-byte integer (Candle's reader would overflow its shift).
        assert!(check_pickle(&[0x80, 2, 0x8a, 255, 0, 0]).is_err());
        // Code: `c os\nsystem\n` is only a name (the reader never calls it), but REDUCE on it
        // builds data, nothing runs; an unknown opcode such as INST ('i') is refused.
        assert!(check_pickle(b"\x80\x02ios\nsystem\n.").unwrap_err().to_string().contains("not read"));
        assert!(check_pickle(b"\x80\x02}q\x00.").is_ok());
    }
}
