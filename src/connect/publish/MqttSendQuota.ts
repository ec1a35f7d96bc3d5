/**
 * MQTT 5 flow control towards the broker: at most `receiveMaximum` (from its CONNACK) QoS 1 and
 * 2 publishes unacknowledged at a time. MQTT.js does not keep to it, and a broker answers the
 * excess with "quota exceeded" (Mosquitto: 0x97). Slots go to waiting publishes in order.
 */
export class MqttSendQuota {
    private _inFlight = 0;
    private readonly _waiting: (() => void)[] = [];

    /** @param limit the broker's current receive maximum. */
    public constructor(private readonly limit: () => number) {}

    /**
     * Takes a slot: null when one was free (taken now), otherwise a promise that resolves once one
     * is given to this caller. A caller that stops waiting must still release the slot it gets.
     */
    public acquire(): Promise<void> | null {
        if (this._inFlight < this.limit() && this._waiting.length === 0) {
            this._inFlight++;
            return null;
        }
        return new Promise<void>((resolve) => this._waiting.push(resolve));
    }

    /** Gives a slot back, to the first waiting caller if any. */
    public release(): void {
        this._inFlight--;
        while (this._waiting.length > 0 && this._inFlight < this.limit()) {
            this._inFlight++;
            this._waiting.shift()!();
        }
    }
}
