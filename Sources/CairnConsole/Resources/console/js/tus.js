// A small tus 1.0 client (core, creation, termination): uploads a File in chunks with PATCH,
// reports progress, and resumes after a reload or a dropped connection by asking the server
// for the upload's offset (HEAD). The upload URL is remembered per file fingerprint in
// localStorage (a URL, never a credential).
import { APIError, api } from './api.js';

const CHUNK = 4 * 1024 * 1024;
const storageKey = (file) => `cairn.tus:${file.name}:${file.size}:${file.lastModified}`;

function metadata(file, format) {
  const encode = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
  const pairs = [`filename ${encode(file.name)}`];
  // The server refuses types outside its allow-list; browsers type a .csv as
  // application/vnd.ms-excel on some systems, so the name's format is sent instead.
  if (file.type && !format) pairs.push(`filetype ${encode(file.type)}`);
  if (format) pairs.push(`format ${encode(format)}`);
  return pairs.join(',');
}

/** The format a file's name suggests (csv, json, ndjson, xml), or undefined. */
export function formatOf(name) {
  const match = /\.(csv|json|ndjson|jsonl|xml)$/i.exec(name);
  if (!match) return undefined;
  const extension = match[1].toLowerCase();
  return extension === 'jsonl' ? 'ndjson' : extension;
}

/** An upload that can be started, paused and resumed. */
export class Upload {
  constructor(file, { onProgress = () => {}, onStatus = () => {} } = {}) {
    this.file = file;
    this.onProgress = onProgress;
    this.onStatus = onStatus;
    this.url = localStorage.getItem(storageKey(file));
    this.request = null;
    this.stopped = false;
    /** The offset the server reported when this upload was resumed (0 for a fresh one). */
    this.resumedFrom = 0;
  }

  /** True when an earlier, unfinished upload of this file can be continued. */
  get resumable() { return Boolean(this.url); }

  /** Uploads to the end; resolves with the new file's id (`Cairn-File-Id`). Retries dropped connections. */
  async start() {
    this.stopped = false;
    let failures = 0;
    for (;;) {
      try {
        return await this.run();
      } catch (error) {
        if (this.stopped || error instanceof APIError && error.status < 500 && error.status !== 409) throw error;
        failures += 1;
        if (failures > 8) throw error;
        this.onStatus(`Connection lost; retrying (${failures})…`);
        await new Promise((resolve) => setTimeout(resolve, Math.min(500 * 2 ** failures, 10000)));
      }
    }
  }

  async run() {
    let offset = 0;
    if (this.url) {
      try {
        const head = await api(this.url, { method: 'HEAD', raw: true, headers: { 'Tus-Resumable': '1.0.0' } });
        offset = Number(head.headers.get('Upload-Offset'));
        this.resumedFrom = offset;
        this.onStatus(`Resuming at ${Math.round((offset / this.file.size) * 100)}%`);
      } catch (error) {
        if (!(error instanceof APIError) || error.status >= 500) throw error;
        this.forget();
      }
    }
    if (!this.url) {
      const created = await api('/uploads', {
        method: 'POST', raw: true,
        headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(this.file.size), 'Upload-Metadata': metadata(this.file, formatOf(this.file.name)) },
      });
      this.url = new URL(created.headers.get('Location'), location.href).pathname;
      localStorage.setItem(storageKey(this.file), this.url);
    }
    this.onProgress(offset, this.file.size);
    let fileId = null;
    while (offset < this.file.size || (this.file.size === 0 && fileId === null)) {
      if (this.stopped) throw new Error('Upload paused.');
      const chunk = this.file.slice(offset, offset + CHUNK);
      const answer = await this.patch(offset, chunk);
      offset = answer.offset;
      fileId = answer.fileId || fileId;
      this.onProgress(offset, this.file.size);
      if (this.file.size === 0) break;
    }
    if (!fileId) {
      const head = await api(this.url, { method: 'HEAD', raw: true, headers: { 'Tus-Resumable': '1.0.0' } });
      fileId = head.headers.get('Cairn-File-Id');
    }
    this.forget();
    return fileId;
  }

  // One PATCH over XMLHttpRequest, for upload progress events within the chunk.
  async patch(offset, chunk) {
    const { token } = await import('./api.js');
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      this.request = request;
      request.open('PATCH', this.url);
      request.setRequestHeader('Tus-Resumable', '1.0.0');
      request.setRequestHeader('Upload-Offset', String(offset));
      request.setRequestHeader('Content-Type', 'application/offset+octet-stream');
      request.setRequestHeader('Authorization', `Bearer ${token()}`);
      request.upload.addEventListener('progress', (event) => this.onProgress(offset + event.loaded, this.file.size));
      request.addEventListener('load', () => {
        if (request.status === 204) {
          resolve({ offset: Number(request.getResponseHeader('Upload-Offset')), fileId: request.getResponseHeader('Cairn-File-Id') });
        } else {
          let problem = null;
          try { problem = JSON.parse(request.responseText); } catch { /* not JSON */ }
          reject(new APIError(request.status, problem));
        }
      });
      request.addEventListener('error', () => reject(new Error('network error')));
      request.addEventListener('abort', () => reject(new Error('Upload paused.')));
      request.send(chunk);
    });
  }

  /** Stops sending; `start()` later resumes from the server's offset. */
  pause() { this.stopped = true; this.request?.abort(); }

  /** Deletes the partial upload on the server (tus termination). */
  async cancel() {
    this.pause();
    if (this.url) await api(this.url, { method: 'DELETE', headers: { 'Tus-Resumable': '1.0.0' } }).catch(() => {});
    this.forget();
  }

  forget() { localStorage.removeItem(storageKey(this.file)); this.url = null; }
}
