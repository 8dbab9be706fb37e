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

var peer: StreamPeerTCP
var failed := ""  # set when the stream broke: the caller ends the program


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


func recv() -> Dictionary:
	# One frame: {"header": Dictionary, "arrays": Array of decoded Arrays}; {} when the stream broke.
	var head := _read(8)
	if failed != "":
		return {}
	var buf := StreamPeerBuffer.new()
	buf.big_endian = true
	buf.data_array = head
	var length := buf.get_u32()
	var hlen := buf.get_u32()
	if length > MAX_FRAME or hlen + 4 > length:
		failed = "a frame of %d bytes (limit %d) or a bad header length" % [length, MAX_FRAME]
		return {}
	var parsed := JSON.parse(_read(hlen).get_string_from_utf8())
	var body := _read(length - 4 - hlen)
	if failed != "" or parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		failed = failed if failed != "" else "a header that is not a JSON object"
		return {}
	var header: Dictionary = parsed.result
	var arrays := []
	var data := StreamPeerBuffer.new()
	data.big_endian = false
	data.data_array = body
	var sizes := {"<f4": 4, "<f8": 8, "<i8": 8, "<i4": 4, "|u1": 1, "|b1": 1}
	for spec in header.get("arrays", []):
		var count := 1
		for d in spec["shape"]:
			count *= int(d)
		var values := []
		var dtype: String = spec["dtype"]
		if count < 0 or count * sizes.get(dtype, 1) > body.size() - data.get_position():
			failed = "an array of %s x %d that the frame does not hold" % [dtype, count]
			return {}
		for _i in range(count):
			match dtype:
				"<f4": values.append(data.get_float())
				"<f8": values.append(data.get_double())
				"<i8": values.append(data.get_64())
				"<i4": values.append(data.get_32())
				"|u1", "|b1": values.append(data.get_u8())
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
	var head := header.to_utf8()
	var total := 0
	for a in arrays:
		total += a[2].size()
	var frame := StreamPeerBuffer.new()
	frame.big_endian = true
	frame.put_u32(4 + head.size() + total)
	frame.put_u32(head.size())
	var out := frame.data_array
	out.append_array(head)
	for a in arrays:
		out.append_array(a[2])
	if peer.put_data(out) != OK:
		failed = "the trainer closed the connection"
