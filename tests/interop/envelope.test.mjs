// An independent implementation of the byok:v1 envelope (README, "Ciphertext envelope"), in Node.js with
// node:crypto only, checked against the shared vector the Rust vault also reproduces. Run: node --test tests/interop/
import { createCipheriv, createDecipheriv, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import assert from "node:assert/strict";

const vector = JSON.parse(readFileSync(new URL("../fixtures/envelope-v1.json", import.meta.url), "utf8"));
const key = Buffer.from(vector.key_hex, "hex");
const kid = createHash("sha256").update("byok-bridge key-id v1\0").update(key).digest().subarray(0, 4).toString("hex");
const aad = Buffer.from(`byok:v1:${kid}:${vector.user}:${vector.provider}`, "ascii");

test("sealing the vector's plaintext with its nonce gives the documented envelope", () => {
	const cipher = createCipheriv("aes-256-gcm", key, Buffer.from(vector.nonce_hex, "hex"));
	cipher.setAAD(aad);
	const sealed = Buffer.concat([cipher.update(vector.plaintext, "utf8"), cipher.final(), cipher.getAuthTag()]);
	const payload = Buffer.concat([Buffer.from(vector.nonce_hex, "hex"), sealed]).toString("base64url");
	assert.equal(`byok:v1:${kid}:${payload}`, vector.envelope);
});

test("the documented envelope opens to the plaintext, and not for another user", () => {
	const [, , envelopeKid, payload] = vector.envelope.split(":");
	assert.equal(envelopeKid, kid);
	const bytes = Buffer.from(payload, "base64url");
	const open = (associated) => {
		const decipher = createDecipheriv("aes-256-gcm", key, bytes.subarray(0, 12));
		decipher.setAAD(associated);
		decipher.setAuthTag(bytes.subarray(bytes.length - 16));
		return Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString("utf8");
	};
	assert.equal(open(aad), vector.plaintext);
	const otherUser = Buffer.from(`byok:v1:${kid}:00000000-0000-4000-8000-000000000000:${vector.provider}`, "ascii");
	assert.throws(() => open(otherUser));
});
