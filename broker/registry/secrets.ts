/**
 * Secrets at rest. Device keys are stored encrypted with AES-256-GCM under a
 * 32-byte master key kept in a separate file (mode 0600) in the data
 * directory; the AAD binds each ciphertext to its device id and key version,
 * so rows cannot be swapped between devices. Account passwords are stored as
 * scrypt hashes (RFC 7914) with a per-account salt and verified in constant time.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync, statSync } from 'node:fs';
import { MqsecError } from '../../firmware/core/errors.js';

export const MASTER_KEY_FILE = 'master.key';
const NONCE_LEN = 12;
const TAG_LEN = 16;

/** Reads the master key, creating it (mode 0600, exclusive create) on first use. */
export function loadOrCreateMasterKey(path: string): Buffer {
  try {
    const fd = openSync(path, 'wx', 0o600);
    try {
      const key = randomBytes(32);
      writeSync(fd, key);
      return key;
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const mode = statSync(path).mode & 0o077;
  if (mode !== 0) throw new MqsecError('STORAGE', `key file ${path} is readable by group/others (chmod 600 it)`);
  const key = readFileSync(path);
  if (key.length !== 32) throw new MqsecError('STORAGE', `key file ${path} is not 32 bytes`);
  return key;
}

function aadFor(deviceId: string, keyVersion: number): Buffer {
  return Buffer.from(`mqsec-device-key|${deviceId}|${keyVersion}`, 'utf8');
}

export function sealDeviceKey(master: Buffer, deviceId: string, keyVersion: number, key: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE_LEN);
  const c = createCipheriv('aes-256-gcm', master, nonce);
  c.setAAD(aadFor(deviceId, keyVersion));
  const ct = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

export function openDeviceKey(master: Buffer, deviceId: string, keyVersion: number, sealed: Buffer): Uint8Array {
  if (sealed.length < NONCE_LEN + TAG_LEN) throw new MqsecError('STORAGE', 'stored device key truncated');
  const d = createDecipheriv('aes-256-gcm', master, sealed.subarray(0, NONCE_LEN));
  d.setAAD(aadFor(deviceId, keyVersion));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
  try {
    const pt = Buffer.concat([d.update(sealed.subarray(NONCE_LEN, sealed.length - TAG_LEN)), d.final()]);
    return new Uint8Array(pt);
  } catch {
    throw new MqsecError('STORAGE', `stored key of ${deviceId} does not decrypt (wrong master key?)`);
  }
}

/** scrypt parameters: N=2^14, r=8, p=1 (RFC 7914 interactive-login range). */
const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const HASH_LEN = 32;

function scryptAsync(password: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, HASH_LEN, SCRYPT, (err, out) => (err ? reject(err) : resolve(out))),
  );
}

export interface PasswordHash {
  salt: Buffer;
  hash: Buffer;
}

export async function hashPassword(password: string): Promise<PasswordHash> {
  const salt = randomBytes(16);
  return { salt, hash: await scryptAsync(password, salt) };
}

/**
 * Constant-time verification. With `stored` undefined (unknown account) a
 * dummy hash is still computed so timing does not reveal which names exist.
 */
export async function verifyPassword(password: string, stored: PasswordHash | undefined): Promise<boolean> {
  const salt = stored?.salt ?? DUMMY_SALT;
  const got = await scryptAsync(password, salt);
  if (!stored) return false;
  return stored.hash.length === got.length && timingSafeEqual(stored.hash, got);
}
const DUMMY_SALT = Buffer.alloc(16, 0x5a);
