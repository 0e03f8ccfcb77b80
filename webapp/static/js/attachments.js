// Images in chat mode, offered only when the server's projector takes them (GET /props
// `modalities.vision`, read by app.js): the attach button (a file picker; on phones it also
// offers the camera), paste and drag and drop, thumbnails of the pending images with a
// remove button, and the thumbnails in sent messages. An image is kept as
// {name, type, url: a data: URI}; api.js sends it as an `image_url` content part.

// What the server decodes (libmtmd reads images with stb_image). Other types the browser can
// show (WebP, AVIF, SVG, ...) are converted to PNG here.
const SERVER_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/bmp'];
// A larger file (a phone photo) is scaled down to MAX_SIDE pixels and sent as JPEG: the
// projector resizes it to a few hundred pixels anyway.
const MAX_BYTES = 4 * 1024 * 1024;
const MAX_SIDE = 2048;

function readDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function redraw(file, type) {
  const src = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = src;
    await img.decode();
    const w = img.naturalWidth || 512;
    const h = img.naturalHeight || 512;
    const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(w * scale));
    canvas.height = Math.max(1, Math.round(h * scale));
    const ctx = canvas.getContext('2d');
    if (type === 'image/jpeg') {   // JPEG has no transparency: white, not black, behind it
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL(type, 0.9);
  } finally {
    URL.revokeObjectURL(src);
  }
}

/** A File as the image the page keeps and sends: the file's own bytes when the server can read them. */
async function toImage(file) {
  const name = file.name || 'image';
  if (SERVER_TYPES.includes(file.type) && file.size <= MAX_BYTES) {
    return { name, type: file.type, url: await readDataURL(file) };
  }
  const type = file.size > MAX_BYTES ? 'image/jpeg' : 'image/png';
  return { name, type, url: await redraw(file, type) };
}

/** A thumbnail of one image; an image the browser did not keep (store.js) is a placeholder. */
export function thumbnail(image) {
  if (!image.url) {
    const missing = document.createElement('span');
    missing.className = 'thumb thumb-missing';
    missing.setAttribute('role', 'img');
    missing.setAttribute('aria-label', `${image.name} (not kept after reload)`);
    missing.title = `${image.name}: too large to keep in the browser's storage`;
    missing.textContent = 'image not kept';
    return missing;
  }
  const img = document.createElement('img');
  img.className = 'thumb';
  img.src = image.url;
  img.alt = image.name;
  img.title = image.name;
  img.decoding = 'async';
  return img;
}

/** The thumbnails of a message's images (hidden when it has none). */
export function messageImages(images) {
  const box = document.createElement('div');
  box.className = 'images';
  const list = Array.isArray(images) ? images : [];
  box.hidden = list.length === 0;
  box.append(...list.map(thumbnail));
  return box;
}

/**
 * Wire the controls: `button` opens `input` (type=file), `list` shows the pending images,
 * `zone` takes pasted and dropped files, `notice` says what could not be attached.
 * Returns {setEnabled(on), count(), take()}: take() hands over the pending images and
 * clears them. Nothing is accepted until setEnabled(true).
 */
export function installAttachments({ button, input, list, zone, notice }) {
  let enabled = false;
  let pending = [];

  function say(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function render() {
    list.hidden = pending.length === 0;
    list.replaceChildren(...pending.map((image, i) => {
      const item = document.createElement('li');
      item.className = 'attachment';
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'attachment-remove';
      remove.setAttribute('aria-label', `Remove ${image.name}`);
      remove.title = `Remove ${image.name}`;
      remove.textContent = '×';
      remove.addEventListener('click', () => {
        pending.splice(i, 1);
        render();
        // keyboard users stay in the list (or go back to the button once it is empty)
        const buttons = list.querySelectorAll('.attachment-remove');
        (buttons[Math.min(i, buttons.length - 1)] || button).focus();
      });
      item.append(thumbnail(image), remove);
      return item;
    }));
  }

  async function add(files) {
    if (!enabled) return;
    const all = [...files];
    const images = all.filter((f) => f.type.startsWith('image/'));
    const others = all.filter((f) => !images.includes(f)).map((f) => f.name || 'a file');
    say(others.length ? `Not an image: ${others.join(', ')}` : '');
    for (const file of images) {
      try {
        pending.push(await toImage(file));
      } catch {
        say(`Could not read ${file.name || 'the image'}`);
      }
      render();
    }
  }

  const hasFiles = (e) => enabled && e.dataTransfer && [...e.dataTransfer.types].includes('Files');

  button.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    add(input.files);
    input.value = '';   // the same file may be chosen again
  });
  zone.addEventListener('paste', (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files] : [];
    if (!enabled || !files.some((f) => f.type.startsWith('image/'))) return;   // text pastes as text
    e.preventDefault();
    add(files);
  });
  zone.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dropping');
  });
  zone.addEventListener('dragleave', (e) => {
    if (!zone.contains(e.relatedTarget)) zone.classList.remove('dropping');
  });
  zone.addEventListener('drop', (e) => {
    zone.classList.remove('dropping');
    if (!hasFiles(e)) return;
    e.preventDefault();
    add(e.dataTransfer.files);
  });

  return {
    setEnabled(on) {
      enabled = on;
      button.hidden = !on;
      if (!on) {
        pending = [];
        render();
        say('');
      }
    },
    count: () => pending.length,
    take() {
      const taken = pending;
      pending = [];
      render();
      say('');
      return taken;
    },
  };
}
