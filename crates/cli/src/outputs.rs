//! What a run leaves behind besides its exit status: the JUnit report (`--junit-xml`), the
//! XML log (`LOGFILE`) and the OpenTelemetry export. All of it is written or flushed when the
//! run ends, however it ends: normally, on failure, or when the global timeout gives up on a
//! script that would not stop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use ntd_core::log::junit::JunitReport;
use ntd_core::log::xml::XmlLog;

use crate::telemetry::Telemetry;

/// The run's reports and exporters.
pub struct Outputs {
    junit: Option<(Arc<JunitReport>, PathBuf)>,
    xml: Option<Arc<XmlLog>>,
    telemetry: Option<Telemetry>,
    finished: Mutex<bool>,
}

static OUTPUTS: OnceLock<Outputs> = OnceLock::new();

impl Outputs {
    /// Keep the outputs for [`finish`]; returns them.
    pub fn install(
        junit: Option<(Arc<JunitReport>, PathBuf)>,
        xml: Option<Arc<XmlLog>>,
        telemetry: Option<Telemetry>,
    ) -> &'static Outputs {
        OUTPUTS.get_or_init(|| Outputs { junit, xml, telemetry, finished: Mutex::new(false) })
    }

    fn finish_once(&self) {
        let mut finished = match self.finished.lock() {
            Ok(finished) => finished,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *finished {
            return;
        }
        *finished = true;
        if let Some((report, path)) = &self.junit
            && let Err(e) = report.write(path)
        {
            eprintln!("nixos-test-driver: cannot write the JUnit report {}: {e}", path.display());
        }
        if let Some(xml) = &self.xml
            && let Err(e) = xml.finish()
        {
            eprintln!("nixos-test-driver: cannot finish the XML log: {e}");
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.shutdown();
        }
    }
}

/// Write the reports and flush the export, once; later calls do nothing.
pub fn finish() {
    if let Some(outputs) = OUTPUTS.get() {
        outputs.finish_once();
    }
}
