// MQTT.js clients opened by a test file, remembered so that an `after` hook can end them all.
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

/**
 * The MQTT.js clients of a test file. Each one is opened without automatic reconnects and with a
 * 5 s connect timeout (then the `defaults`, then each call's own options, take precedence) and is
 * remembered until endAll().
 */
export class TestClients {
    private readonly _clients = new Set<MqttClient>();

    public constructor(private readonly _defaults: IClientOptions = {}) {}

    /** Connects and resolves once connected (rejects when the broker refuses or does not answer). */
    public async connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
        return this.add(await mqtt.connectAsync(url, this.options(options)));
    }

    /** A client created synchronously, so 'message' listeners exist before CONNACK arrives. */
    public create(url: string, options: IClientOptions = {}): MqttClient {
        return this.add(mqtt.connect(url, this.options(options)));
    }

    /** Remembers a client (one opened elsewhere, or forgotten before) and returns it. */
    public add(client: MqttClient): MqttClient {
        this._clients.add(client);
        return client;
    }

    /** Forgets a client: endAll() leaves it alone. */
    public delete(client: MqttClient): void {
        this._clients.delete(client);
    }

    /** Ends every remembered client at once (forced, nothing in flight is waited for) and forgets them. */
    public async endAll(): Promise<void> {
        const all = [...this._clients];
        this._clients.clear();
        await Promise.all(all.map((client) => client.endAsync(true)));
    }

    private options(options: IClientOptions): IClientOptions {
        return { reconnectPeriod: 0, connectTimeout: 5000, ...this._defaults, ...options };
    }
}
