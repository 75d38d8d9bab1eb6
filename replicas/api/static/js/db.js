// The page's own store in the browser (IndexedDB): the catalog and shop details as last
// read from the till, and the queue of sales rung while the till did not answer.
// Nothing here is the till's log: a queued sale is not a sale until the till has it.

const DB_NAME = "tillmesh-till";
const VERSION = 1;
let opened = null;

function open() {
  opened ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("kv"); // "catalog", "shop"
      db.createObjectStore("queue", { keyPath: "receipt" });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opened;
}

async function run(store, mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const req = work(tx.objectStore(store));
    tx.oncomplete = () => resolve(req?.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const kv = {
  get: (key) => run("kv", "readonly", (s) => s.get(key)),
  put: (key, value) => run("kv", "readwrite", (s) => s.put(value, key)),
};

// Entries: {receipt, sale, queuedAt, refused?}. `put` is durable once it resolves (the
// transaction committed), so a sale is shown as queued only after it is kept.
export const queue = {
  all: async () => {
    const rows = await run("queue", "readonly", (s) => s.getAll());
    return rows.sort((a, b) => a.queuedAt - b.queuedAt);
  },
  put: (entry) => run("queue", "readwrite", (s) => s.put(entry)),
  remove: (receipt) => run("queue", "readwrite", (s) => s.delete(receipt)),
};
