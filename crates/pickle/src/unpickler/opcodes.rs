//! The pickle opcodes of protocols 0 to 5, named as CPython's `pickle.py` names them, so that the
//! dispatch loop reads as the protocol instead of as byte literals.
//!
//! Every opcode of those protocols is here, including the ones the reader refuses (persistent ids,
//! the extension registry, out-of-band buffers, INST/OBJ), so that any byte the dispatch does not
//! match by name is an unknown opcode.

// Protocol 0 and 1.

/// Pushes a mark: the start of the items of a tuple, list, dict, set or APPENDS/SETITEMS.
pub(super) const MARK: u8 = b'(';
/// Ends the pickle: the top of the stack is its value.
pub(super) const STOP: u8 = b'.';
/// Discards the top of the stack.
pub(super) const POP: u8 = b'0';
/// Discards the stack down to the topmost mark, and the mark.
pub(super) const POP_MARK: u8 = b'1';
/// Pushes a copy of the top of the stack.
pub(super) const DUP: u8 = b'2';
/// A float written as a text line.
pub(super) const FLOAT: u8 = b'F';
/// An integer written as a text line (`01` / `00` are how protocol 0 writes booleans).
pub(super) const INT: u8 = b'I';
/// A 4-byte signed little-endian integer.
pub(super) const BININT: u8 = b'J';
/// A 1-byte unsigned integer.
pub(super) const BININT1: u8 = b'K';
/// A long integer written as a text line, with an optional trailing `L`.
pub(super) const LONG: u8 = b'L';
/// A 2-byte unsigned little-endian integer.
pub(super) const BININT2: u8 = b'M';
/// Pushes `None`.
pub(super) const NONE: u8 = b'N';
/// A persistent id written as a text line (refused).
pub(super) const PERSID: u8 = b'P';
/// A persistent id taken from the stack (refused).
pub(super) const BINPERSID: u8 = b'Q';
/// Calls a callable with an argument tuple (interpreted, never called).
pub(super) const REDUCE: u8 = b'R';
/// A Python 2 byte string written as a quoted text line.
pub(super) const STRING: u8 = b'S';
/// A Python 2 byte string with a 4-byte length.
pub(super) const BINSTRING: u8 = b'T';
/// A Python 2 byte string with a 1-byte length.
pub(super) const SHORT_BINSTRING: u8 = b'U';
/// A `str` written as a raw-unicode-escape text line.
pub(super) const UNICODE: u8 = b'V';
/// A UTF-8 `str` with a 4-byte length.
pub(super) const BINUNICODE: u8 = b'X';
/// Appends the top of the stack to the list below it.
pub(super) const APPEND: u8 = b'a';
/// Sets the state of the object below the top of the stack (`__setstate__`).
pub(super) const BUILD: u8 = b'b';
/// Pushes a global named by two text lines, module and name.
pub(super) const GLOBAL: u8 = b'c';
/// Builds a dict from the key/value pairs above the topmost mark.
pub(super) const DICT: u8 = b'd';
/// Pushes an empty dict.
pub(super) const EMPTY_DICT: u8 = b'}';
/// Appends the items above the topmost mark to the list below it.
pub(super) const APPENDS: u8 = b'e';
/// Pushes a memo entry whose key is a text line.
pub(super) const GET: u8 = b'g';
/// Pushes a memo entry with a 1-byte key.
pub(super) const BINGET: u8 = b'h';
/// Builds an instance of a class named by text lines (protocol 0; refused).
pub(super) const INST: u8 = b'i';
/// Pushes a memo entry with a 4-byte key.
pub(super) const LONG_BINGET: u8 = b'j';
/// Builds a list from the items above the topmost mark.
pub(super) const LIST: u8 = b'l';
/// Pushes an empty list.
pub(super) const EMPTY_LIST: u8 = b']';
/// Builds an instance of the class above the topmost mark (protocol 1; refused).
pub(super) const OBJ: u8 = b'o';
/// Stores the top of the stack in the memo under a key written as a text line.
pub(super) const PUT: u8 = b'p';
/// Stores the top of the stack in the memo under a 1-byte key.
pub(super) const BINPUT: u8 = b'q';
/// Stores the top of the stack in the memo under a 4-byte key.
pub(super) const LONG_BINPUT: u8 = b'r';
/// Sets one key/value pair in the dict below them.
pub(super) const SETITEM: u8 = b's';
/// Builds a tuple from the items above the topmost mark.
pub(super) const TUPLE: u8 = b't';
/// Pushes an empty tuple.
pub(super) const EMPTY_TUPLE: u8 = b')';
/// Sets the key/value pairs above the topmost mark in the dict below it.
pub(super) const SETITEMS: u8 = b'u';
/// An 8-byte big-endian float.
pub(super) const BINFLOAT: u8 = b'G';

// Protocol 2.

/// Declares the protocol version.
pub(super) const PROTO: u8 = 0x80;
/// Creates an instance: `cls.__new__(cls, *args)` (interpreted, never called).
pub(super) const NEWOBJ: u8 = 0x81;
/// A copyreg extension code, 1 byte (refused).
pub(super) const EXT1: u8 = 0x82;
/// A copyreg extension code, 2 bytes (refused).
pub(super) const EXT2: u8 = 0x83;
/// A copyreg extension code, 4 bytes (refused).
pub(super) const EXT4: u8 = 0x84;
/// Builds a tuple from the top stack item.
pub(super) const TUPLE1: u8 = 0x85;
/// Builds a tuple from the top two stack items.
pub(super) const TUPLE2: u8 = 0x86;
/// Builds a tuple from the top three stack items.
pub(super) const TUPLE3: u8 = 0x87;
/// Pushes `True`.
pub(super) const NEWTRUE: u8 = 0x88;
/// Pushes `False`.
pub(super) const NEWFALSE: u8 = 0x89;
/// A little-endian two's complement integer with a 1-byte length.
pub(super) const LONG1: u8 = 0x8a;
/// A little-endian two's complement integer with a 4-byte length.
pub(super) const LONG4: u8 = 0x8b;

// Protocol 3.

/// `bytes` with a 4-byte length.
pub(super) const BINBYTES: u8 = b'B';
/// `bytes` with a 1-byte length.
pub(super) const SHORT_BINBYTES: u8 = b'C';

// Protocol 4.

/// A UTF-8 `str` with a 1-byte length.
pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
/// A UTF-8 `str` with an 8-byte length.
pub(super) const BINUNICODE8: u8 = 0x8d;
/// `bytes` with an 8-byte length.
pub(super) const BINBYTES8: u8 = 0x8e;
/// Pushes an empty set.
pub(super) const EMPTY_SET: u8 = 0x8f;
/// Adds the items above the topmost mark to the set below it.
pub(super) const ADDITEMS: u8 = 0x90;
/// Builds a frozenset from the items above the topmost mark.
pub(super) const FROZENSET: u8 = 0x91;
/// Like NEWOBJ, with a dict of keyword arguments.
pub(super) const NEWOBJ_EX: u8 = 0x92;
/// Pushes a global named by two strings on the stack, module and name.
pub(super) const STACK_GLOBAL: u8 = 0x93;
/// Stores the top of the stack in the memo under the next free key.
pub(super) const MEMOIZE: u8 = 0x94;
/// Starts a frame of opcodes with an 8-byte length.
pub(super) const FRAME: u8 = 0x95;

// Protocol 5.

/// A `bytearray` with an 8-byte length.
pub(super) const BYTEARRAY8: u8 = 0x96;
/// Pushes the next out-of-band buffer (refused).
pub(super) const NEXT_BUFFER: u8 = 0x97;
/// Makes the buffer on top of the stack read-only (refused).
pub(super) const READONLY_BUFFER: u8 = 0x98;

/// Whether an opcode first appeared in protocol 1 (the binary opcodes of Python 2's
/// `cPickle`): a stream without PROTO that uses one was written with protocol 1, not 0.
pub(super) fn is_protocol_1(opcode: u8) -> bool {
    matches!(
        opcode,
        BINFLOAT
            | EMPTY_LIST
            | APPENDS
            | EMPTY_TUPLE
            | EMPTY_DICT
            | SETITEMS
            | BINPUT
            | LONG_BINPUT
            | BINGET
            | LONG_BINGET
            | BININT
            | BININT1
            | BININT2
            | BINPERSID
            | BINSTRING
            | SHORT_BINSTRING
            | BINUNICODE
            | POP_MARK
            | OBJ
    )
}
