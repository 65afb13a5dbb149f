@echo off
rem sdui one-click launcher (Windows). First start: makes venv\ beside this file, installs the torch
rem build for this machine and sdui, then starts the app. Later starts skip the install.
rem Extra arguments go to the app:  launch.bat --listen --api
rem Environment: SDUI_TORCH_SPEC, SDUI_TORCH_INDEX, PYTHON, SDUI_NO_START=1 (install only).
setlocal enabledelayedexpansion
cd /d "%~dp0"
if "%PYTHON%"=="" set PYTHON=python
if "%SDUI_TORCH_SPEC%"=="" set SDUI_TORCH_SPEC=torch==2.14.1 torchvision==0.29.1
set VENV=%~dp0venv
set VPY=%VENV%\Scripts\python.exe

%PYTHON% -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)" >nul 2>&1
if errorlevel 1 (
  echo sdui needs Python 3.10 or newer. Install it from python.org and tick "Add python.exe to PATH".
  exit /b 1
)
if not exist "%VPY%" (
  echo Creating %VENV% ...
  %PYTHON% -m venv "%VENV%" || exit /b 1
)

set HAS_NVIDIA=0
nvidia-smi -L >nul 2>&1 && set HAS_NVIDIA=1

rem Install once per (pyproject.toml, torch spec) pair.
for /f "delims=" %%h in ('"%VPY%" -c "import hashlib,os; print(hashlib.sha256(open('pyproject.toml','rb').read()+os.environ['SDUI_TORCH_SPEC'].encode()+os.environ.get('SDUI_TORCH_INDEX','').encode()).hexdigest())"') do set WANT=%%h
set HAVE=
if exist "%VENV%\.sdui-installed" set /p HAVE=<"%VENV%\.sdui-installed"
if not "%HAVE%"=="%WANT%" (
  "%VPY%" -m pip install --quiet --upgrade pip
  set INDEX=%SDUI_TORCH_INDEX%
  if "!INDEX!"=="" if "%HAS_NVIDIA%"=="1" set INDEX=https://download.pytorch.org/whl/cu128
  if "!INDEX!"=="" set INDEX=https://download.pytorch.org/whl/cpu
  echo Installing %SDUI_TORCH_SPEC% from !INDEX! ...
  "%VPY%" -m pip install --timeout 30 --retries 1 --index-url !INDEX! %SDUI_TORCH_SPEC% || "%VPY%" -m pip install %SDUI_TORCH_SPEC% || exit /b 1
  rem No CUDA GPU: the UNet runs on the CPU, where OpenVINO is about twice PyTorch's speed
  set EXTRAS=
  if "%HAS_NVIDIA%"=="0" set EXTRAS=[openvino]
  echo Installing sdui!EXTRAS! ...
  "%VPY%" -m pip install -e "%~dp0.!EXTRAS!" || exit /b 1
  > "%VENV%\.sdui-installed" echo %WANT%
)

if "%HAS_NVIDIA%"=="1" (
  "%VPY%" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >nul 2>&1
  if errorlevel 1 (
    echo WARNING: this PC has an NVIDIA GPU but the installed torch cannot use it.
    echo Repair:  "%VPY%" -m pip install --force-reinstall %SDUI_TORCH_SPEC% --index-url https://download.pytorch.org/whl/cu128
    echo Continuing on the CPU.
  )
)
if not "%SDUI_NO_START%"=="" exit /b 0
"%VPY%" "%~dp0app.py" %*
