/** A publish handed to MQTT.js and not settled yet: a node of [[PendingPublishes]]. */
export class PendingPublish {
    public prev: PendingPublish | null = null;
    public next: PendingPublish | null = null;
    /** QoS 2 only: the callback handed to MQTT.js, to find the publish in MQTT.js's tables. */
    public callback: ((...args: never[]) => void) | null = null;
    /** QoS 2 only: the message id MQTT.js gave it, once written. */
    public messageId: number | undefined = undefined;

    public constructor(
        public readonly topic: string,
        /** Date.now() at the call, for the `mqtt.publish_time` counter. */
        public readonly started: number,
        public readonly resolve: () => void,
        public readonly reject: (err: Error) => void,
        public readonly qos: number,
    ) {}
}

/**
 * The publishes of a session not settled yet, so that end() or a loss for good can fail them
 * all. A doubly linked list through the publishes themselves: adding and removing one is on the
 * path of every message, and here it allocates nothing and hashes nothing (a Set of callbacks
 * cost more than the rest of the session's work per publish).
 */
export class PendingPublishes {
    private _head: PendingPublish | null = null;
    private _size = 0;

    public get size(): number {
        return this._size;
    }

    public add(publish: PendingPublish): void {
        publish.prev = null;
        publish.next = this._head;
        if (this._head) this._head.prev = publish;
        this._head = publish;
        this._size++;
    }

    /** Removes a publish; false when it is not in the list (settled already). */
    public remove(publish: PendingPublish): boolean {
        if (publish.prev === null && this._head !== publish) return false;
        if (publish.prev) publish.prev.next = publish.next;
        else this._head = publish.next;
        if (publish.next) publish.next.prev = publish.prev;
        publish.prev = null;
        publish.next = null;
        this._size--;
        return true;
    }

    /** What the list holds, oldest first (it stays as it is). */
    public toArray(): PendingPublish[] {
        const all: PendingPublish[] = [];
        for (let p = this._head; p; p = p.next) all.push(p);
        return all.reverse();
    }

    /** Empties the list and returns what it held, oldest first. */
    public takeAll(): PendingPublish[] {
        const all: PendingPublish[] = [];
        for (let p = this._head; p; p = p.next) all.push(p);
        for (const p of all) {
            p.prev = null;
            p.next = null;
        }
        this._head = null;
        this._size = 0;
        return all.reverse();
    }
}
