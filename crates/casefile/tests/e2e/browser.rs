//! A real browser for the console's tests: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver) with fantoccini. `.ci/run` installs both; elsewhere a test
//! skips, with the reason printed, when they are missing (and fails when `CI` is set).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for one thing to appear in the page (a live status, a download).
pub const PAGE_WAIT: Duration = Duration::from_secs(120);

/// chromedriver, stopped (with its browsers) on drop.
pub struct Browser {
    pub client: Client,
    _driver: Driver,
    pub downloads: PathBuf,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// `None` (test skipped) when Chromium or chromedriver is missing outside CI.
pub async fn start(name: &str) -> Option<Browser> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium and chromium-driver (.ci/run)");
        eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let profile = tempfile::tempdir().unwrap();
    let mut driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
        profile.path().join("chrome"),
    );
    let downloads = profile.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let shots = std::env::var_os("CASEFILE_TEST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"))
        .join(name);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000", format!("--user-data-dir={}", profile.path().join("chrome").display()),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        }),
    );
    // chromedriver takes a moment to listen: connecting is retried until it does.
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..200 {
        match ClientBuilder::rustls().expect("TLS roots").capabilities(caps.clone()).connect(&url).await {
            Ok(client) => return Some(Browser { client, _driver: driver, downloads, shots, _profile: profile }),
            Err(e) => {
                last = Some(e);
                if driver.0.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("chromedriver did not accept a session: {last:?}");
}

/// The chromedriver process, killed on drop, with the browsers it started for this
/// test's profile (a killed chromedriver leaves them running).
struct Driver(Child, PathBuf);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("pkill").arg("-f").arg(format!("user-data-dir={}", self.1.display())).status();
    }
}

impl Browser {
    /// Ends the browser session (the drop kills what is left).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Waits (up to [`PAGE_WAIT`]) until the page is at a path `done` accepts: a click
    /// that submits a form returns before the browser has followed the answer.
    pub async fn wait_path(&self, done: impl Fn(&str) -> bool) -> String {
        let waited = tokio::time::timeout(PAGE_WAIT, async {
            loop {
                let path = self.path().await;
                if done(&path) {
                    return path;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("the page never reached the expected path"))
    }

    /// Waits (up to [`PAGE_WAIT`]) until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        let found = tokio::time::timeout(PAGE_WAIT, async {
            while !self.has(css).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "{css} never appeared");
    }

    /// The page's text, for assertions on what a user reads.
    pub async fn body(&self) -> String {
        self.text("body").await
    }

    /// Waits (up to [`PAGE_WAIT`]) until `css`'s text satisfies `done`, without reloading.
    pub async fn wait_text(&self, css: &str, done: impl Fn(&str) -> bool) -> String {
        let waited = tokio::time::timeout(PAGE_WAIT, async {
            loop {
                if let Ok(el) = self.client.find(Locator::Css(css)).await
                    && let Ok(text) = el.text().await
                    && done(&text)
                {
                    return text;
                }
                // The page refreshes itself every few seconds; look again shortly.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("{css} never reached the expected text"))
    }

    /// Saves a screenshot of the page as `NN-name.png`, after checking that every control
    /// on it has a label (buttons: their text) a screen reader can announce.
    pub async fn shot(&self, name: &str) {
        let unlabelled = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))\
                   .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim() : e.labels.length === 0)\
                   .map(e => e.outerHTML);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, serde_json::json!([]), "{name}: controls without a label");
        let png = self.client.screenshot().await.unwrap();
        let count = std::fs::read_dir(&self.shots).map(|d| d.count()).unwrap_or(0);
        std::fs::write(self.shots.join(format!("{count:02}-{name}.png")), png).unwrap();
    }

    /// Waits for one finished download in the download directory.
    pub async fn downloaded(&self) -> PathBuf {
        tokio::time::timeout(PAGE_WAIT, async {
            loop {
                let done = std::fs::read_dir(&self.downloads)
                    .unwrap()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|x| x == "zip"));
                if let Some(path) = done {
                    return path;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the download finished in time")
    }
}
