# nondiff bridge protocol 1.1 (docs/protocol.md), the wire side for Godot 3: frames, binary arrays, HMAC.
#
# Godot 4 differences (the rest ports as is):
#   - StreamPeerTCP.connect_to_host() does not poll by itself: call peer.poll() before get_status();
#   - PoolByteArray/PoolRealArray are PackedByteArray/PackedFloat32Array; subarray(a, b) is slice(a, b + 1);
#   - var2bytes/to_json/JSON.parse are var_to_bytes/JSON.stringify/JSON.parse_string;
#   - PackedByteArray.encode_float()/decode_float() replace the StreamPeerBuffer round trip;
#   - HMACContext (4.0+, also 3.3+) can replace hmac_sha256() below.
extends Reference

const MAX_FRAME := 16 * 1024 * 1024  # this program's limit on a frame from the trainer (bytes)
const SIZES := {"<f4": 4, "<f8": 8, "<i8": 8, "<i4": 4, "|u1": 1, "|b1": 1}  # bytes per element

var peer: StreamPeerTCP
var failed := ""  # set when the stream broke: the caller ends the program
var _last_text := ""  # the last header received and its parse: recv() returns the same one again, read-only
var _last_header := {}
var _parsed_one := false


func _init(p: StreamPeerTCP) -> void:
	peer = p
	peer.big_endian = true  # frame lengths are big-endian u32
	peer.set_no_delay(true)


static func sha256(data: PoolByteArray) -> PoolByteArray:
	var ctx := HashingContext.new()
	ctx.start(HashingContext.HASH_SHA256)
	ctx.update(data)
	return ctx.finish()


static func hmac_sha256(key: PoolByteArray, msg: PoolByteArray) -> PoolByteArray:
	if key.size() > 64:
		key = sha256(key)
	var ipad := PoolByteArray()
	var opad := PoolByteArray()
	for i in range(64):
		var b: int = key[i] if i < key.size() else 0
		ipad.append(b ^ 0x36)
		opad.append(b ^ 0x5c)
	ipad.append_array(msg)
	opad.append_array(sha256(ipad))
	return sha256(opad)


static func mac(token: String, side: String, nonce: String) -> String:
	if token == "":
		return ""
	return hmac_sha256(token.to_utf8(), (side + nonce).to_utf8()).hex_encode()


static func same(a: String, b: String) -> bool:  # constant time for equal lengths
	if a.length() != b.length():
		return false
	var diff := 0
	for i in range(a.length()):
		diff |= a.ord_at(i) ^ b.ord_at(i)
	return diff == 0


static func floats(values) -> PoolByteArray:
	# little-endian float32 from an Array or PoolRealArray: var2bytes(PoolRealArray) minus its 8-byte header
	var raw := var2bytes(PoolRealArray(values))
	return raw.subarray(8, raw.size() - 1) if values.size() > 0 else PoolByteArray()


static func bools(values: Array) -> PoolByteArray:
	var out := PoolByteArray()
	for v in values:
		out.append(1 if v else 0)
	return out


func _read(n: int) -> PoolByteArray:
	if n == 0:
		return PoolByteArray()
	var got: Array = peer.get_data(n)  # blocks until n bytes came, or the stream ended
	if got[0] != OK or got[1].size() != n:
		failed = "the trainer closed the connection"
		return PoolByteArray()
	return got[1]


static func _u32(b: PoolByteArray, at: int) -> int:  # big-endian
	return (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]


func recv() -> Dictionary:
	# One frame: {"header": Dictionary, "arrays": Array of decoded Arrays}; {} when the stream broke.
	# Two reads per frame: the lengths, then the header and the arrays together.
	var head := _read(8)
	if failed != "":
		return {}
	var length := _u32(head, 0)
	var hlen := _u32(head, 4)
	if length > MAX_FRAME or hlen + 4 > length:
		failed = "a frame of %d bytes (limit %d) or a bad header length" % [length, MAX_FRAME]
		return {}
	var rest := _read(length - 4)
	if failed != "":
		return {}
	var text := rest.subarray(0, hlen - 1).get_string_from_utf8() if hlen > 0 else ""
	var header: Dictionary = _last_header
	if not _parsed_one or text != _last_text:  # a step's header repeats while its instances and layout do
		var parsed := JSON.parse(text)
		if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
			failed = "a header that is not a JSON object"
			return {}
		header = parsed.result
		_last_text = text
		_last_header = header
		_parsed_one = true
	var arrays := []
	var specs: Array = header.get("arrays", [])
	if specs.empty():
		return {"header": header, "arrays": arrays}
	var data := StreamPeerBuffer.new()
	data.big_endian = false
	data.data_array = rest
	data.seek(hlen)
	for spec in specs:
		var count := 1
		for d in spec["shape"]:
			count *= int(d)
		var values := []
		var dtype: String = spec["dtype"]
		if count < 0 or count * SIZES.get(dtype, 1) > rest.size() - data.get_position():
			failed = "an array of %s x %d that the frame does not hold" % [dtype, count]
			return {}
		match dtype:
			"<f4":
				for _i in range(count):
					values.append(data.get_float())
			"<f8":
				for _i in range(count):
					values.append(data.get_double())
			"<i8":
				for _i in range(count):
					values.append(data.get_64())
			"<i4":
				for _i in range(count):
					values.append(data.get_32())
			"|u1", "|b1":
				for _i in range(count):
					values.append(data.get_u8())
			_:
				failed = "an array of dtype %s, which this client does not read" % dtype
				return {}
		arrays.append(values)
	return {"header": header, "arrays": arrays}


func send(header: Dictionary, arrays: Array = []) -> void:
	# arrays: [[dtype, shape, PoolByteArray], ...], referenced from the header as {"$array": i}
	var specs := []
	for a in arrays:
		specs.append({"dtype": a[0], "shape": a[1]})
	if specs.size() > 0:
		header["arrays"] = specs
	send_text(to_json(header), arrays)


func send_text(header: String, arrays: Array = []) -> void:
	# A header already in JSON (to_json costs ~50 us a header in Godot 3: the sync node caches its own)
	send_bytes(header.to_utf8(), arrays)


func send_bytes(head: PoolByteArray, arrays: Array = []) -> void:
	# A header already in JSON and UTF-8; one write per frame
	var total := 0
	for a in arrays:
		total += a[2].size()
	var length := 4 + head.size() + total
	var out := PoolByteArray([(length >> 24) & 255, (length >> 16) & 255, (length >> 8) & 255, length & 255,
		(head.size() >> 24) & 255, (head.size() >> 16) & 255, (head.size() >> 8) & 255, head.size() & 255])
	out.append_array(head)
	for a in arrays:
		out.append_array(a[2])
	if peer.put_data(out) != OK:
		failed = "the trainer closed the connection"
